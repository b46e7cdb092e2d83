package initiator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/pdu"
)

// maxRedirects bounds how many login redirections Dial follows.
const maxRedirects = 4

// Dial connects to cfg.Addr, logs in and returns a session in the full
// feature phase. Login redirections are followed; other login failures
// come back as *LoginError.
func Dial(ctx context.Context, cfg Config) (*Session, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	addr := withPort(cfg.Addr)
	for hop := 0; ; hop++ {
		s, err := dialOnce(ctx, cfg, addr)
		var le *LoginError
		if errors.As(err, &le) && le.Class == pdu.LoginRedirect && le.TargetAddress != "" && hop < maxRedirects {
			addr = le.TargetAddress
			continue
		}
		return s, err
	}
}

func dialOnce(ctx context.Context, cfg Config, addr string) (*Session, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("login to %s: %w", addr, err)
	}
	// Login is synchronous reads and writes; cancellation reaches them as
	// an expired deadline.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	l := newLoginConn(conn, &cfg, addr)
	err = l.run()
	if !stop() && err == nil {
		err = ctx.Err() // the deadline fired after the last read: the connection is unusable
	}
	if err != nil {
		_ = conn.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("login to %s: %w (%v)", addr, ctx.Err(), err)
		}
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return newSession(l, cfg), nil
}
