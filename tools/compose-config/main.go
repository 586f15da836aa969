// compose-config loads a Compose file the way `docker compose config` does (compose-go: schema validation,
// interpolation, depends_on and extension checks, profiles from COMPOSE_PROFILES) and prints its services, or
// the error. It lets the tests validate docker-compose.yml on machines without Docker.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: compose-config <docker-compose.yml>")
		os.Exit(2)
	}
	opts, err := cli.NewProjectOptions([]string{os.Args[1]}, cli.WithOsEnv, cli.WithDotEnv, cli.WithDefaultProfiles(), cli.WithConsistency(true))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "invalid:", err)
		os.Exit(1)
	}
	type service struct {
		Name          string            `json:"name"`
		Image         string            `json:"image,omitempty"`
		Environment   map[string]string `json:"environment,omitempty"`
		ContainerName string            `json:"containerName,omitempty"`
		Ports         []string          `json:"ports,omitempty"`
		DependsOn     []string          `json:"dependsOn,omitempty"`
		// Bind mounts and volumes as source:target (sources of bind mounts are absolute paths).
		Volumes []string `json:"volumes,omitempty"`
		Command []string `json:"command,omitempty"`
		// The restart policy and the time between SIGTERM and SIGKILL on a stop (Go duration), when set.
		Restart         string `json:"restart,omitempty"`
		StopGracePeriod string `json:"stopGracePeriod,omitempty"`
	}
	out := struct {
		Name     string    `json:"name"`
		Services []service `json:"services"`
	}{Name: project.Name}
	for _, name := range project.ServiceNames() {
		s := project.Services[name]
		entry := service{Name: name, Image: s.Image, ContainerName: s.ContainerName, Environment: map[string]string{}}
		for k, v := range s.Environment {
			if v != nil {
				entry.Environment[k] = *v
			}
		}
		for _, p := range s.Ports {
			port := fmt.Sprintf("%s:%s", p.Published, fmt.Sprint(p.Target))
			// The host address a port is published on, when it is given (127.0.0.1: reachable from the host only).
			if p.HostIP != "" {
				port = p.HostIP + ":" + port
			}
			entry.Ports = append(entry.Ports, port)
		}
		for dep := range s.DependsOn {
			entry.DependsOn = append(entry.DependsOn, dep)
		}
		for _, v := range s.Volumes {
			entry.Volumes = append(entry.Volumes, fmt.Sprintf("%s:%s", v.Source, v.Target))
		}
		entry.Command = append(entry.Command, s.Command...)
		entry.Restart = s.Restart
		if s.StopGracePeriod != nil {
			entry.StopGracePeriod = time.Duration(*s.StopGracePeriod).String()
		}
		out.Services = append(out.Services, entry)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
}
