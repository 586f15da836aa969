// Command dtm-tcc runs one set of TCC transactions through a DTM server, as `npm run bench -- --tcc` asks it to
// (tools/dtm.ts): Try, then Confirm, of one unit of stock, one coupon and some points, the three participants
// written the way DTM's documentation writes them (each branch one local MySQL transaction behind DTM's barrier:
// idempotent, null compensation, no hanging). The same rows as payflow's participants move the same way: stock
// available -> reserved -> sold, coupon AVAILABLE -> FROZEN -> USED, points available -> frozen -> spent, and each
// Try and Confirm appends the order's timeline entry (order_events), as payflow's do. Payflow's participants do more
// besides (a fence quantity, the coupon's pricing check, stock holds per bucket): tools/bench-tcc.ts says so.
//
// It serves the branches over HTTP, runs the transactions from -concurrency goroutines (TccGlobalTransaction2, with
// wait_result so that a transaction ends when DTM has confirmed every branch, as a payflow workflow does), and prints
// one JSON line: completed, failed, wall time, each transaction's latency and its own CPU over the run. The database
// comes from the environment (DTM_TCC_DB_HOST, _PORT, _USER, _PASSWORD, _NAME), not the command line.
package main

import (
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dtm-labs/dtm/client/dtmcli"
	"github.com/go-resty/resty/v2"
	"github.com/go-sql-driver/mysql"
)

type call struct {
	OrderID    string `json:"orderId"`
	UserID     string `json:"userId"`
	Sku        string `json:"sku"`
	CouponCode string `json:"couponCode"`
	Points     int    `json:"points"`
}

type result struct {
	Completed   int               `json:"completed"`
	Failed      int               `json:"failed"`
	Errors      map[string]int    `json:"errors"`
	Examples    map[string]string `json:"examples"`
	WallMs      float64           `json:"wallMs"`
	LatenciesMs []float64         `json:"latenciesMs"`
	CPUMs       float64           `json:"cpuMs"`
}

// One branch's business statement: exactly one row must change. A Try that changes none answers 409 (DTM then
// cancels the transaction's tried branches); a Confirm or Cancel that changes none is an error DTM retries.
type step func(tx *sql.Tx, c call) (sql.Result, error)

// The timeline entry each operation appends, as payflow's participants do (RESERVED on Try, CONFIRMED on Confirm,
// RELEASED on Cancel).
var eventSuffix = map[string]string{"try": "RESERVED", "confirm": "CONFIRMED", "cancel": "RELEASED"}

var steps = map[string]map[string]step{
	"stock": {
		"try": func(tx *sql.Tx, c call) (sql.Result, error) {
			return tx.Exec("UPDATE stock SET available = available - 1, reserved = reserved + 1 WHERE sku = ? AND available >= 1", c.Sku)
		},
		"confirm": func(tx *sql.Tx, c call) (sql.Result, error) {
			return tx.Exec("UPDATE stock SET reserved = reserved - 1, sold = sold + 1 WHERE sku = ? AND reserved >= 1", c.Sku)
		},
		"cancel": func(tx *sql.Tx, c call) (sql.Result, error) {
			return tx.Exec("UPDATE stock SET reserved = reserved - 1, available = available + 1 WHERE sku = ? AND reserved >= 1", c.Sku)
		},
	},
	"coupon": {
		"try": func(tx *sql.Tx, c call) (sql.Result, error) {
			// The coupon read under its lock first, as payflow's Try checks its owner and status before holding it.
			var owner, status string
			if err := tx.QueryRow("SELECT user_id, status FROM coupons WHERE code = ? FOR UPDATE", c.CouponCode).Scan(&owner, &status); err != nil {
				return nil, err
			}
			return tx.Exec("UPDATE coupons SET status = 'FROZEN', order_id = ? WHERE code = ? AND user_id = ? AND status = 'AVAILABLE'", c.OrderID, c.CouponCode, c.UserID)
		},
		"confirm": func(tx *sql.Tx, c call) (sql.Result, error) {
			return tx.Exec("UPDATE coupons SET status = 'USED' WHERE code = ? AND order_id = ? AND status = 'FROZEN'", c.CouponCode, c.OrderID)
		},
		"cancel": func(tx *sql.Tx, c call) (sql.Result, error) {
			return tx.Exec("UPDATE coupons SET status = 'AVAILABLE', order_id = NULL WHERE code = ? AND order_id = ? AND status = 'FROZEN'", c.CouponCode, c.OrderID)
		},
	},
	"points": {
		"try": func(tx *sql.Tx, c call) (sql.Result, error) {
			return tx.Exec("UPDATE user_points SET available = available - ?, frozen = frozen + ? WHERE user_id = ? AND available >= ?", c.Points, c.Points, c.UserID, c.Points)
		},
		"confirm": func(tx *sql.Tx, c call) (sql.Result, error) {
			return tx.Exec("UPDATE user_points SET frozen = frozen - ?, spent = spent + ? WHERE user_id = ? AND frozen >= ?", c.Points, c.Points, c.UserID, c.Points)
		},
		"cancel": func(tx *sql.Tx, c call) (sql.Result, error) {
			return tx.Exec("UPDATE user_points SET frozen = frozen - ?, available = available + ? WHERE user_id = ? AND frozen >= ?", c.Points, c.Points, c.UserID, c.Points)
		},
	},
}

// branch serves /<participant>/<op>: the barrier first, then the statement and the timeline entry, in one local
// transaction.
func branch(db *sql.DB, participant, op string, run step) http.HandlerFunc {
	event := strings.ToUpper(participant) + "_" + eventSuffix[op]
	return func(w http.ResponseWriter, r *http.Request) {
		var c call
		body, err := io.ReadAll(r.Body)
		if err == nil {
			err = json.Unmarshal(body, &c)
		}
		var barrier *dtmcli.BranchBarrier
		if err == nil {
			barrier, err = dtmcli.BarrierFromQuery(r.URL.Query())
		}
		if err == nil {
			err = barrier.CallWithDB(db, func(tx *sql.Tx) error {
				res, err := run(tx, c)
				if err != nil {
					return err
				}
				if n, _ := res.RowsAffected(); n != 1 {
					if op == "try" {
						return fmt.Errorf("%w: %s %s changed %d rows", dtmcli.ErrFailure, r.URL.Path, c.OrderID, n)
					}
					return fmt.Errorf("%s %s changed %d rows", r.URL.Path, c.OrderID, n)
				}
				_, err = tx.Exec("INSERT INTO order_events (order_id, type, message) VALUES (?, ?, ?)", c.OrderID, event, participant+" "+op)
				return err
			})
		}
		code, answer := dtmcli.Result2HttpJSON(err)
		if err == nil {
			answer = map[string]string{"dtm_result": dtmcli.ResultSuccess}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(answer)
	}
}

func cpuMs() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e6
}

func main() {
	dtm := flag.String("dtm", "", "DTM server's HTTP API, e.g. http://127.0.0.1:36789/api/dtmsvr")
	prefix := flag.String("prefix", "", "the set's id prefix, as tools/bench-tcc.ts seeded it")
	sku := flag.String("sku", "", "the set's SKU")
	n := flag.Int("transactions", 0, "transactions")
	concurrency := flag.Int("concurrency", 10, "clients, each with one transaction in flight")
	points := flag.Int("points", 300, "points taken by each transaction")
	flag.Parse()
	if *dtm == "" || *prefix == "" || *sku == "" || *n < 1 || *concurrency < 1 || os.Getenv("DTM_TCC_DB_NAME") == "" {
		flag.Usage()
		os.Exit(2)
	}

	// interpolateParams: one round trip per statement, as DTM's own DSN helper sets it and as mysql2 sends them.
	dbConf := mysql.NewConfig()
	dbConf.Net = "tcp"
	dbConf.Addr = net.JoinHostPort(os.Getenv("DTM_TCC_DB_HOST"), os.Getenv("DTM_TCC_DB_PORT"))
	dbConf.User = os.Getenv("DTM_TCC_DB_USER")
	dbConf.Passwd = os.Getenv("DTM_TCC_DB_PASSWORD")
	dbConf.DBName = os.Getenv("DTM_TCC_DB_NAME")
	dbConf.InterpolateParams = true
	db, err := sql.Open("mysql", dbConf.FormatDSN())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	db.SetMaxOpenConns(*concurrency*3 + 4)
	db.SetMaxIdleConns(*concurrency*3 + 4)
	dtmcli.SetBarrierTableName("dtm_barrier")

	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	mux := http.NewServeMux()
	for participant, ops := range steps {
		for op, run := range ops {
			mux.Handle("/"+participant+"/"+op, branch(db, participant, op, run))
		}
	}
	go func() { _ = http.Serve(listener, mux) }()
	busi := "http://" + listener.Addr().String()

	// Warm before the clock starts: the pool's connections open, DTM's server answers (a new gid).
	var warm sync.WaitGroup
	for i := 0; i < *concurrency; i++ {
		warm.Add(1)
		go func() {
			defer warm.Done()
			_ = db.Ping()
			if res, err := http.Get(*dtm + "/newGid"); err == nil {
				_, _ = io.Copy(io.Discard, res.Body)
				_ = res.Body.Close()
			}
		}()
	}
	warm.Wait()

	calls := make(chan call)
	go func() {
		for i := 0; i < *n; i++ {
			calls <- call{
				OrderID:    fmt.Sprintf("%s-%d", *prefix, i),
				UserID:     fmt.Sprintf("%s-u%d", *prefix, i),
				Sku:        *sku,
				CouponCode: fmt.Sprintf("%s-c%d", *prefix, i),
				Points:     *points,
			}
		}
		close(calls)
	}()

	var mu sync.Mutex
	out := result{Errors: map[string]int{}, Examples: map[string]string{}, LatenciesMs: make([]float64, 0, *n)}
	cpu0 := cpuMs()
	t0 := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < *concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range calls {
				started := time.Now()
				err := dtmcli.TccGlobalTransaction2(*dtm, c.OrderID, func(t *dtmcli.Tcc) { t.WaitResult = true },
					func(t *dtmcli.Tcc) (*resty.Response, error) {
						for _, participant := range []string{"stock", "coupon", "points"} {
							base := busi + "/" + participant
							if res, err := t.CallBranch(c, base+"/try", base+"/confirm", base+"/cancel"); err != nil {
								return res, err
							}
						}
						return nil, nil
					})
				latency := float64(time.Since(started).Microseconds()) / 1000
				mu.Lock()
				if err != nil {
					out.Failed++
					kind := "error"
					if errors.Is(err, dtmcli.ErrFailure) {
						kind = "FAILURE"
					}
					out.Errors[kind]++
					if _, seen := out.Examples[kind]; !seen {
						out.Examples[kind] = err.Error()
					}
				} else {
					out.LatenciesMs = append(out.LatenciesMs, latency)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	out.WallMs = float64(time.Since(t0).Microseconds()) / 1000
	out.CPUMs = cpuMs() - cpu0
	out.Completed = len(out.LatenciesMs)
	_ = json.NewEncoder(os.Stdout).Encode(out)
}
