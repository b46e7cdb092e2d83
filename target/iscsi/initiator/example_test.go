package initiator_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/initiator"
	"github.com/hatarget/hatarget/target/iscsi/pdu"
)

func Example() {
	ctx := context.Background()
	targets, err := initiator.Discover(ctx, "127.0.0.1:3260", "")
	if err != nil || len(targets) == 0 {
		log.Fatal(err)
	}
	s, err := initiator.Dial(ctx, initiator.Config{
		Addr:       targets[0].Portals[0].Addr,
		TargetName: targets[0].Name,
		CHAPUser:   "user", CHAPSecret: "secret-0123456",
		HeaderDigest: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Logout(ctx)

	capacity, err := s.ReadCapacity(ctx, 1)
	if err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 8*capacity.BlockSize)
	if err := s.Read(ctx, 1, 0, 8, int(capacity.BlockSize), buf); err != nil {
		log.Fatal(err)
	}
}

// Start and Wait split a command so that it can be aborted while in flight.
func ExampleSession_Start() {
	ctx := context.Background()
	s, err := initiator.Dial(ctx, initiator.Config{Addr: "127.0.0.1:3260", TargetName: "iqn.2024-01.io.hatarget:disk"})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	call, err := s.Start(ctx, initiator.Command{LUN: 1, CDB: []byte{0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0}, DataIn: make([]byte, 4096)})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := s.TaskMgmt(ctx, pdu.TMFAbortTask, 1, call.ITT()); err != nil {
		log.Fatal(err)
	}
	_, err = call.Wait(ctx) // initiator.ErrTaskAborted unless the read won the race
	fmt.Println(err)
}

func ExampleBench() {
	cfg := initiator.Config{Addr: "127.0.0.1:3260", TargetName: "iqn.2024-01.io.hatarget:disk"}
	res, err := initiator.Bench(context.Background(), cfg, initiator.BenchConfig{
		Pattern: "randread", QueueDepth: 32, BlockSize: 4096, Duration: 10 * time.Second, LUN: 1,
	}, os.Stderr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res)
}
