// Command hatarget is the hatarget iSCSI target: a single node serving an
// SCST configuration file today, the cluster agent and its control commands
// as they arrive.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/hatarget/hatarget/cluster"
)

func main() {
	root := newRootCommand()
	execServerRuntime(root, os.Args, os.Environ(), os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "hatarget:", err)
		os.Exit(exitStatus(err))
	}
}

// exitConfig (sysexits' EX_CONFIG) says the agent cannot run with this
// configuration at all: the unit's RestartPreventExitStatus stops systemd
// from restarting it in a loop.
const exitConfig = 78

func exitStatus(err error) int {
	if errors.Is(err, cluster.ErrNewerDataDir) {
		return exitConfig
	}
	return 1
}
