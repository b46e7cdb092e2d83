package main

import (
	"time"

	"github.com/spf13/pflag"

	"github.com/hatarget/hatarget/target/iscsi"
)

// portalOptions are the iSCSI portal settings agent and serve share: how
// idle initiators are pinged, and how much an unauthenticated or hostile
// peer may hold (docs/security.md, "Hostile initiators").
type portalOptions struct {
	nopIn                   time.Duration
	loginTimeout            time.Duration
	maxConns                int
	maxConnsPerSource       int
	maxSessionsPerTarget    int
	maxSessionsPerInitiator int
	maxTextBytes            int
}

func (o *portalOptions) addFlags(f *pflag.FlagSet) {
	f.DurationVar(&o.nopIn, "nop-in-interval", 30*time.Second, "ping an idle initiator after this long (0 disables)")
	f.DurationVar(&o.loginTimeout, "iscsi-login-timeout", iscsi.DefaultLoginTimeout, "drop a connection whose login takes longer")
	f.IntVar(&o.maxConns, "iscsi-max-connections", iscsi.DefaultMaxConnections, "iSCSI connections at once, logged in or not")
	f.IntVar(&o.maxConnsPerSource, "iscsi-max-connections-per-source", iscsi.DefaultMaxConnectionsPerSource, "iSCSI connections at once from one IP address")
	f.IntVar(&o.maxSessionsPerTarget, "iscsi-max-sessions-per-target", iscsi.DefaultMaxSessionsPerTarget, "sessions at once on one target")
	f.IntVar(&o.maxSessionsPerInitiator, "iscsi-max-sessions-per-initiator", iscsi.DefaultMaxSessionsPerInitiator, "sessions at once of one initiator name")
	f.IntVar(&o.maxTextBytes, "iscsi-max-text-bytes", iscsi.DefaultMaxTextBytes, "bytes of login or text keys one request may accumulate over continued PDUs")
}

func (o portalOptions) iscsi() iscsi.Options {
	return iscsi.Options{
		NOPInterval:             o.nopIn,
		LoginTimeout:            o.loginTimeout,
		MaxConnections:          o.maxConns,
		MaxConnectionsPerSource: o.maxConnsPerSource,
		MaxSessionsPerTarget:    o.maxSessionsPerTarget,
		MaxSessionsPerInitiator: o.maxSessionsPerInitiator,
		MaxTextBytes:            o.maxTextBytes,
	}
}
