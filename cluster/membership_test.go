package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"testing"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/fsm"
)

func TestLeaderUnavailable(t *testing.T) {
	refused := &url.Error{Op: "Post", URL: "http://127.0.0.2:9260/v1/internal/in-sync",
		Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}
	tests := []struct {
		name  string
		err   error
		retry bool
	}{
		{"no leader known", errNoLeader, true},
		{"leadership moved before proposing", fmt.Errorf("%w: lost", errNotLeader), true},
		{"leadership lost while committing", errOutcomeUnknown, true},
		{"the leader we knew is down", fmt.Errorf("cannot reach http://127.0.0.2:9260: %w", refused), true},
		{"the leader answers it has no quorum", &api.Error{Status: http.StatusServiceUnavailable, Code: api.CodeNoLeader}, true},
		{"the leader is shutting down", &api.Error{Status: http.StatusServiceUnavailable, Code: api.CodeUnavailable}, true},
		{"not committed in time", &api.Error{Status: http.StatusGatewayTimeout, Code: api.CodeTimeout}, true},
		{"epoch moved on (remote)", &api.Error{Status: http.StatusConflict, Code: api.CodeConflict}, false},
		{"bad token", &api.Error{Status: http.StatusUnauthorized, Code: api.CodeUnauthorized}, false},
		{"epoch moved on (local)", &fsm.Error{Code: fsm.CodeConflict, Msg: "epoch"}, false},
		{"cancelled", context.Canceled, false},
		{"anything else", errors.New("boom"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := leaderUnavailable(tc.err); got != tc.retry {
				t.Fatalf("leaderUnavailable(%v) = %v, want %v", tc.err, got, tc.retry)
			}
		})
	}
}
