// Command hatarget is the hatarget iSCSI target: a single node serving an
// SCST configuration file today, the cluster agent and its control commands
// as they arrive.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "hatarget:", err)
		os.Exit(1)
	}
}
