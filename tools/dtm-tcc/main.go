// Command dtm-tcc runs one set of TCC transactions through a DTM server, as `npm run bench -- --tcc` asks it to
// (tools/dtm.ts): Try, then Confirm, of one unit of stock, one coupon and some points, the three participants
// written the way DTM's documentation writes them (each branch one local MySQL transaction behind DTM's barrier:
// idempotent, null compensation, no hanging). The same rows as payflow's participants move the same way: stock
// available -> reserved -> sold, coupon AVAILABLE -> FROZEN -> USED, points available -> frozen -> spent.
//
// It serves the branches over HTTP, runs the transactions from -concurrency goroutines (TccGlobalTransaction, with
// wait_result so that a transaction ends when DTM has confirmed every branch, as a payflow workflow does), and prints
// one JSON line: completed, failed, wall time, each transaction's latency and its own CPU over the run.
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
	"sync"
	"syscall"
	"time"

	"github.com/dtm-labs/dtm/client/dtmcli"
	"github.com/go-resty/resty/v2"
	_ "github.com/go-sql-driver/mysql"
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

// One branch's business statement: exactly one row must change, else the branch fails (DTM then cancels).
type step func(tx *sql.Tx, c call) (sql.Result, error)

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

// branch serves /<participant>/<op>: the barrier first, then the statement, in one local transaction.
func branch(db *sql.DB, run step) http.HandlerFunc {
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
					return fmt.Errorf("%w: %s %s changed %d rows", dtmcli.ErrFailure, r.URL.Path, c.OrderID, n)
				}
				return nil
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
	dsn := flag.String("dsn", "", "the participants' database, go-sql-driver form: root:@tcp(127.0.0.1:3306)/payflow_bench_tcc")
	prefix := flag.String("prefix", "", "the set's id prefix, as tools/bench-tcc.ts seeded it")
	sku := flag.String("sku", "", "the set's SKU")
	n := flag.Int("transactions", 0, "transactions")
	concurrency := flag.Int("concurrency", 10, "clients, each with one transaction in flight")
	points := flag.Int("points", 300, "points taken by each transaction")
	flag.Parse()
	if *dtm == "" || *dsn == "" || *prefix == "" || *sku == "" || *n < 1 || *concurrency < 1 {
		flag.Usage()
		os.Exit(2)
	}

	db, err := sql.Open("mysql", *dsn)
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
			mux.Handle("/"+participant+"/"+op, branch(db, run))
		}
	}
	go func() { _ = http.Serve(listener, mux) }()
	busi := "http://" + listener.Addr().String()

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
