package iscsi

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/backend"
	"github.com/hatarget/hatarget/target/iscsi/initiator"
	"github.com/hatarget/hatarget/target/iscsi/pdu"
	"github.com/hatarget/hatarget/target/scsi"
)

const (
	removableIQN = "iqn.2024-01.io.hatarget.test:removable"
	reconnectIQN = "iqn.2024-01.io.hatarget.test:reconnecting-initiator"
)

var (
	cdbPrevent = []byte{0x1e, 0, 0, 0, 0x01, 0}          // PREVENT ALLOW MEDIUM REMOVAL, PREVENT=1
	cdbEject   = []byte{0x1b, 0, 0, 0, 0x02, 0}          // START STOP UNIT, LOEJ=1 START=0
	cdbSync    = []byte{0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0} // SYNCHRONIZE CACHE(10): a worker runs it

	_ scsi.TaskManagementForwarder = (*holdingForwarder)(nil)
)

// holdingForwarder makes its LU its own owner: commands run on it as the
// owner's forward server would run them, except that SYNCHRONIZE CACHE and
// I_T nexus losses wait until release is closed. A held nexus loss keeps a
// session ending; a held command keeps the reader inside an ABORT TASK of
// it.
type holdingForwarder struct {
	lu      *scsi.LU
	release chan struct{}
	once    sync.Once
	holding chan struct{} // a value for every command held
}

func (f *holdingForwarder) Forward(cmd *scsi.Command, res *scsi.Result) bool {
	if len(cmd.CDB) > 0 && cmd.CDB[0] == cdbSync[0] {
		f.holding <- struct{}{}
		<-f.release
	}
	f.lu.ExecuteLocal(cmd, res)
	return false
}

func (f *holdingForwarder) ForwardReset(from *scsi.Nexus) error {
	f.lu.ResetLULocal(from)
	return nil
}

func (f *holdingForwarder) ForwardNexusLoss(n *scsi.Nexus) error {
	<-f.release
	f.lu.NexusLossLocal(n)
	return nil
}

func (f *holdingForwarder) Abort(*scsi.Nexus, uint32) int { return 0 }

func (f *holdingForwarder) releaseAll() { f.once.Do(func() { close(f.release) }) }

// oneLU maps the LU as LUN 0.
type oneLU struct{ lu *scsi.LU }

func (v oneLU) LU(lun uint64) *scsi.LU {
	if lun == 0 {
		return v.lu
	}
	return nil
}
func (oneLU) LUNs() []uint64 { return []uint64{0} }

// startRemovable serves one removable LU behind a holdingForwarder.
func startRemovable(t *testing.T) (*Server, initiator.Config, *holdingForwarder) {
	t.Helper()
	dev, err := backend.Open(backend.Options{Handler: backend.NullIO, Size: 1 << 20, BlockSize: 512})
	if err != nil {
		t.Fatal(err)
	}
	lu, err := scsi.NewLU(scsi.LUConfig{Device: dev, Removable: true, Serial: "removable"})
	if err != nil {
		t.Fatal(err)
	}
	f := &holdingForwarder{lu: lu, release: make(chan struct{}), holding: make(chan struct{}, 4)}
	lu.SetForwarder(f)
	srv := NewServer(Options{Logger: slog.New(slog.DiscardHandler)})
	srv.SetTargets([]*Target{{Name: removableIQN, Limits: DefaultLimits(), RelativePort: 1, PortGroup: 1,
		Views: func(string) scsi.View { return oneLU{lu} }}}, nil)
	a := listenLoopback(t, srv)
	t.Cleanup(f.releaseAll) // runs first: nothing may stay held at shutdown
	return srv, initiator.Config{Addr: a.String(), TargetName: removableIQN, InitiatorName: reconnectIQN}, f
}

// command runs cdb past the unit attentions a new nexus gets first, and
// fails unless it ends with GOOD.
func command(ctx context.Context, s *initiator.Session, cdb []byte) error {
	for range 5 {
		r, err := s.Do(ctx, 0, cdb, nil, nil)
		if err != nil {
			return err
		}
		serr := &initiator.SCSIError{Opcode: cdb[0], Status: r.Status, Sense: r.Sense}
		if key, _, _ := serr.SenseKey(); r.Status == initiator.StatusCheckCondition && key == 0x06 {
			continue
		}
		if r.Status != initiator.StatusGood {
			key, asc, ascq := serr.SenseKey()
			return fmt.Errorf("opcode %#02x: status %#02x, sense %x/%02x/%02x", cdb[0], r.Status, key, asc, ascq)
		}
		return nil
	}
	return fmt.Errorf("opcode %#02x: unit attentions without end", cdb[0])
}

// waitFor polls the server's state until cond holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// readerAborting reports whether a session of the server has a task marked
// aborted: its reader is inside ABORT TASK, waiting for the task to end.
func readerAborting(srv *Server) bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for _, sess := range srv.sessions {
		sess.mu.Lock()
		for _, tk := range sess.tasks {
			if tk.aborted.Load() {
				sess.mu.Unlock()
				return true
			}
		}
		sess.mu.Unlock()
	}
	return false
}

// TestLoginAfterNexusLoss: an initiator sets PREVENT MEDIUM REMOVAL, loses
// its session and logs in again with a new ISID (libiscsi's
// SCSI.PreventAllow.ITNexusLoss). The loss of the old I_T nexus releases
// the prevention, so the new session's eject must succeed, however far the
// target got in ending the old session when the new login arrived. The
// old session's nexus loss is held, so a login that does not wait for it
// is seen every time.
func TestLoginAfterNexusLoss(t *testing.T) {
	for _, tc := range []struct {
		name string
		// leave ends the first session the way the initiator does.
		leave func(t *testing.T, ctx context.Context, srv *Server, f *holdingForwarder, s *initiator.Session)
	}{
		{"connection dropped", func(t *testing.T, ctx context.Context, srv *Server, f *holdingForwarder, s *initiator.Session) {
			s.Close()
		}},
		{"connection dropped while the reader is busy", func(t *testing.T, ctx context.Context, srv *Server, f *holdingForwarder, s *initiator.Session) {
			// The reader waits in ABORT TASK for a held command, so it
			// cannot see the close: only the socket's state tells.
			call, err := s.Start(ctx, initiator.Command{CDB: cdbSync})
			if err != nil {
				t.Fatal(err)
			}
			<-f.holding
			tmf := make(chan error, 1)
			go func() {
				_, err := s.TaskMgmt(ctx, pdu.TMFAbortTask, 0, call.ITT())
				tmf <- err
			}()
			waitFor(t, "the reader is aborting the command", func() bool { return readerAborting(srv) })
			s.Close()
			<-tmf
			call.Wait(ctx)
		}},
		{"logout", func(t *testing.T, ctx context.Context, srv *Server, f *holdingForwarder, s *initiator.Session) {
			if err := s.Logout(ctx); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, cfg, f := startRemovable(t)
			ctx := testContext(t)
			s1, err := initiator.Dial(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := command(ctx, s1, cdbPrevent); err != nil {
				t.Fatal(err)
			}
			tc.leave(t, ctx, srv, f, s1)

			type outcome struct {
				s   *initiator.Session
				err error
			}
			done := make(chan outcome, 1)
			go func() {
				s2, err := initiator.Dial(ctx, cfg)
				if err == nil {
					err = command(ctx, s2, cdbEject)
				}
				done <- outcome{s2, err}
			}()
			// While the old nexus loss is held, the new login must not
			// complete. The wait only bounds how long we look for that.
			select {
			case o := <-done:
				if o.s != nil {
					o.s.Close()
				}
				t.Fatalf("new session logged in and ran its eject (%v) before the old session's I_T nexus loss", o.err)
			case <-time.After(200 * time.Millisecond):
			}
			f.releaseAll()
			o := <-done
			if o.s != nil {
				defer o.s.Close()
			}
			if o.err != nil {
				t.Fatalf("eject after the old I_T nexus was lost: %v", o.err)
			}
		})
	}
}

// TestLoginDoesNotWaitForLiveSession: a second session of the initiator
// (multipath) logs in at once, whatever the first one is doing, and is a
// nexus of its own, which the first one's PREVENT holds back.
func TestLoginDoesNotWaitForLiveSession(t *testing.T) {
	_, cfg, f := startRemovable(t)
	ctx := testContext(t)
	s1, err := initiator.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	if err := command(ctx, s1, cdbPrevent); err != nil {
		t.Fatal(err)
	}
	call, err := s1.Start(ctx, initiator.Command{CDB: cdbSync})
	if err != nil {
		t.Fatal(err)
	}
	<-f.holding // s1 is busy, and healthy

	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s2, err := initiator.Dial(lctx, cfg)
	if err != nil {
		t.Fatalf("second session of the initiator: %v", err)
	}
	defer s2.Close()
	if err := command(lctx, s2, cdbEject); err == nil {
		t.Error("eject succeeded though another nexus prevents medium removal")
	}
	f.releaseAll()
	if r, err := call.Wait(ctx); err != nil || r.Status != initiator.StatusGood {
		t.Errorf("SYNCHRONIZE CACHE on the first session: %+v, %v", r, err)
	}
}

// TestPeerClosed checks what peerClosed sees of a TCP connection.
func TestPeerClosed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, tc := range []struct {
		name  string
		peer  func(net.Conn) // what the initiator does to its end
		after bool
	}{
		{"open", func(net.Conn) {}, false},
		{"closed", func(c net.Conn) { c.Close() }, true},
		{"reset", func(c net.Conn) { c.(*net.TCPConn).SetLinger(0); c.Close() }, true},
		{"closed with data unread", func(c net.Conn) { c.Write([]byte("unread PDU")); c.Close() }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peer, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			nc, err := l.Accept()
			if err != nil {
				t.Fatal(err)
			}
			c := &conn{nc: nc}
			defer nc.Close()
			if c.peerClosed() {
				t.Fatal("open connection reported closed")
			}
			tc.peer(peer)
			if tc.after {
				waitFor(t, "the close is seen", c.peerClosed)
			} else if c.peerClosed() {
				t.Error("open connection reported closed")
			}
			nc.Close()
			if !c.peerClosed() {
				t.Error("connection we closed not reported closed")
			}
		})
	}
}
