package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// The servers (agent, serve) run under a Go runtime setting that only the
// environment can make: GODEBUG=schedtrace=N with N as large as it goes.
//
// Go's sysmon thread sleeps on a note whenever every P is idle, and the
// first system call after that wakes it, after which it polls every 20 µs
// for a while. A target is idle between nearly every round trip, so it
// paid that wake-up and its sleeps several times per I/O: on the
// development machine, where a context switch costs 15-25 µs, an owner of a
// replicated LUN switched 0.8 times per 4 KiB write and each replica 0.33.
// With schedtrace set sysmon never sleeps on the note (the runtime keeps it
// polling so that it can print the trace on time): it backs off to one
// check every 10 ms instead. Measured side by side (replication/DESIGN.md):
// 0.35 and 0.10 context switches per replicated write, a third less CPU
// per write. The price: an idle `serve` wakes about 100 times a second
// (1.9 ms of CPU a second) instead of never.
//
// The trace itself is printed every 2^31-1 ms (24.8 days) of the monotonic
// clock, so a host up for longer sees one SCHED line on standard error at
// start and another every 24.8 days; a fatal runtime error also prints the
// scheduler's state. An operator who sets schedtrace in GODEBUG
// (schedtrace=0 restores Go's default) is left alone.
const sysmonPolling = "schedtrace=2147483647"

// serverAnnotation marks the commands that get sysmonPolling.
const serverAnnotation = "hatarget.server"

// withSysmonPolling returns env with sysmonPolling added to GODEBUG, or
// false when GODEBUG already sets schedtrace.
func withSysmonPolling(env []string) ([]string, bool) {
	out := make([]string, 0, len(env)+1)
	godebug := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
			godebug = v
			continue
		}
		out = append(out, kv)
	}
	for _, setting := range strings.Split(godebug, ",") {
		if strings.HasPrefix(strings.TrimSpace(setting), "schedtrace=") {
			return env, false
		}
	}
	if godebug != "" {
		godebug += ","
	}
	return append(out, "GODEBUG="+godebug+sysmonPolling), true
}

// execServerRuntime replaces the process with itself under sysmonPolling
// when args name a server command and the setting is not made yet. It
// returns only when it did not exec; a failed exec is reported on errOut
// and the server runs under Go's defaults.
func execServerRuntime(root *cobra.Command, args, env []string, errOut io.Writer) {
	cmd, _, err := root.Find(args[1:])
	if err != nil {
		return
	}
	if _, server := cmd.Annotations[serverAnnotation]; !server {
		return
	}
	env, changed := withSysmonPolling(env)
	if !changed {
		return
	}
	// Not /proc/self/exe, which would name the process "exe".
	self, err := os.Executable()
	if err == nil {
		err = syscall.Exec(self, args, env)
	}
	fmt.Fprintf(errOut, "hatarget: running with Go's default scheduler settings: re-executing with GODEBUG=%s: %v\n", sysmonPolling, err)
}
