package main

import (
	"slices"
	"testing"

	"github.com/spf13/cobra"
)

func TestWithSysmonPolling(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     []string
		want    []string
		changed bool
	}{
		{"no GODEBUG", []string{"PATH=/bin"}, []string{"PATH=/bin", "GODEBUG=" + sysmonPolling}, true},
		{"other settings kept", []string{"GODEBUG=http2client=0", "HOME=/root"},
			[]string{"HOME=/root", "GODEBUG=http2client=0," + sysmonPolling}, true},
		{"empty GODEBUG", []string{"GODEBUG="}, []string{"GODEBUG=" + sysmonPolling}, true},
		{"operator's schedtrace", []string{"GODEBUG=schedtrace=0"}, []string{"GODEBUG=schedtrace=0"}, false},
		{"operator's schedtrace among others", []string{"A=1", "GODEBUG=madvdontneed=1, schedtrace=1000"},
			[]string{"A=1", "GODEBUG=madvdontneed=1, schedtrace=1000"}, false},
		{"scheddetail is not schedtrace", []string{"GODEBUG=scheddetail=1"},
			[]string{"GODEBUG=scheddetail=1," + sysmonPolling}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, changed := withSysmonPolling(tc.env)
			if changed != tc.changed || !slices.Equal(got, tc.want) {
				t.Errorf("withSysmonPolling(%q) = %q, %v; want %q, %v", tc.env, got, changed, tc.want, tc.changed)
			}
		})
	}
}

// Only the long-running servers re-execute themselves: a control command
// or a client would pay an exec for nothing.
func TestServerCommandsGetSysmonPolling(t *testing.T) {
	root := newRootCommand()
	var servers []string
	walk(root, func(c *cobra.Command) {
		if _, ok := c.Annotations[serverAnnotation]; ok {
			servers = append(servers, c.CommandPath())
		}
	})
	if want := []string{"hatarget agent", "hatarget serve"}; !slices.Equal(servers, want) {
		t.Errorf("commands annotated %s: %q, want %q", serverAnnotation, servers, want)
	}
}
