package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/initiator"
	"github.com/hatarget/hatarget/target/iscsi/pdu"
	"github.com/hatarget/hatarget/test/nodetest"
)

const (
	chapIQN   = "iqn.2024-01.io.hatarget:chap"
	mutualIQN = "iqn.2024-01.io.hatarget:mutual"

	chapUser     = "joe"
	chapSecret   = "12charsecret!"
	targetUser   = "tgt"
	targetSecret = "12chartgtsecret"
)

// TestCHAP covers one-way and mutual CHAP on normal sessions: the right
// credentials log in with either hash, anything else is refused with
// "authentication failure" before the session exists.
func TestCHAP(t *testing.T) {
	t.Parallel()
	disks := makeDisks(t, "disk01")
	conf := handlerBlock(disks, "disk01") + `
TARGET_DRIVER iscsi {
    enabled 1
    TARGET ` + chapIQN + ` {
        IncomingUser "` + chapUser + ` ` + chapSecret + `"
        LUN 0 disk01
        enabled 1
    }
    TARGET ` + mutualIQN + ` {
        IncomingUser "` + chapUser + ` ` + chapSecret + `"
        OutgoingUser "` + targetUser + ` ` + targetSecret + `"
        LUN 0 disk01
        enabled 1
    }
}
`
	n := nodetest.Start(t, conf, nodetest.Options{})
	ctx := testCtx(t, 60*time.Second)

	cases := []struct {
		name   string
		target string
		cfg    initiator.Config
		// alg is the CHAP algorithm a successful login must have used;
		// 0 means the login must fail.
		alg int
		// authFailure: the target must refuse with status 0201; otherwise
		// the initiator itself rejects the target.
		authFailure bool
	}{
		{"MD5", chapIQN, initiator.Config{CHAPUser: chapUser, CHAPSecret: chapSecret}, initiator.CHAPMD5, false},
		{"SHA-256", chapIQN, initiator.Config{CHAPUser: chapUser, CHAPSecret: chapSecret,
			CHAPAlgorithms: []int{initiator.CHAPSHA256}}, initiator.CHAPSHA256, false},
		{"SHA-256 preferred over MD5", chapIQN, initiator.Config{CHAPUser: chapUser, CHAPSecret: chapSecret,
			CHAPAlgorithms: []int{initiator.CHAPSHA256, initiator.CHAPMD5}}, initiator.CHAPSHA256, false},
		{"wrong secret", chapIQN, initiator.Config{CHAPUser: chapUser, CHAPSecret: "12charsecret?"}, 0, true},
		{"unknown user", chapIQN, initiator.Config{CHAPUser: "mallory", CHAPSecret: chapSecret}, 0, true},
		{"AuthMethod None", chapIQN, initiator.Config{}, 0, true},
		{"security stage skipped", chapIQN, initiator.Config{SkipSecurity: true}, 0, true},
		{"mutual MD5", mutualIQN, initiator.Config{CHAPUser: chapUser, CHAPSecret: chapSecret,
			MutualUser: targetUser, MutualSecret: targetSecret}, initiator.CHAPMD5, false},
		{"mutual SHA-256", mutualIQN, initiator.Config{CHAPUser: chapUser, CHAPSecret: chapSecret,
			MutualUser: targetUser, MutualSecret: targetSecret, CHAPAlgorithms: []int{initiator.CHAPSHA256}}, initiator.CHAPSHA256, false},
		{"one-way CHAP to a mutual target", mutualIQN, initiator.Config{CHAPUser: chapUser, CHAPSecret: chapSecret}, initiator.CHAPMD5, false},
		{"mutual: target proves the wrong secret", mutualIQN, initiator.Config{CHAPUser: chapUser, CHAPSecret: chapSecret,
			MutualUser: targetUser, MutualSecret: "not-the-target-secret"}, 0, false},
		{"mutual: target has another name", mutualIQN, initiator.Config{CHAPUser: chapUser, CHAPSecret: chapSecret,
			MutualUser: "someone-else", MutualSecret: targetSecret}, 0, false},
		{"mutual asked of a target without OutgoingUser", chapIQN, initiator.Config{CHAPUser: chapUser, CHAPSecret: chapSecret,
			MutualUser: targetUser, MutualSecret: targetSecret}, 0, true},
		{"mutual with a wrong initiator secret", mutualIQN, initiator.Config{CHAPUser: chapUser, CHAPSecret: "wrong-secret-123",
			MutualUser: targetUser, MutualSecret: targetSecret}, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := tc.cfg
			cfg.Addr, cfg.TargetName = n.Addr(), tc.target
			cfg.InitiatorName = "iqn.2024-01.io.hatarget:chap-" + strings.ReplaceAll(strings.ToLower(tc.name), " ", "-")
			s, err := initiator.Dial(ctx, cfg)
			if tc.alg == 0 {
				if err == nil {
					s.Close()
					t.Fatal("login succeeded")
				}
				le, isLogin := loginError(err)
				switch {
				case tc.authFailure && (!isLogin || le.Class != pdu.LoginInitiatorErr || le.Detail != pdu.LoginDetailAuthFailed):
					t.Fatalf("login failed with %v; want status 0201 (authentication failure)", err)
				case !tc.authFailure && isLogin:
					t.Fatalf("target refused the login (%v); the initiator should have refused the target", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("login: %v", err)
			}
			defer s.Close()
			if got := s.Negotiated().CHAPAlgorithm; got != tc.alg {
				t.Errorf("CHAP algorithm %d, want %d", got, tc.alg)
			}
			if err := s.TestUnitReady(ctx, 0); err != nil {
				t.Fatal(err)
			}
			if err := s.Logout(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestDiscoveryCHAP checks that the iscsi driver's IncomingUser guards
// discovery sessions, and that without it discovery is open.
func TestDiscoveryCHAP(t *testing.T) {
	t.Parallel()
	const discoUser, discoSecret = "disco", "12chardiscosecret"
	disks := makeDisks(t, "disk01")
	target := `
    TARGET ` + guideIQN + ` {
        LUN 0 disk01
        enabled 1
    }
}
`
	open := nodetest.Start(t, handlerBlock(disks, "disk01")+"TARGET_DRIVER iscsi {\n    enabled 1\n"+target, nodetest.Options{})
	guarded := nodetest.Start(t, handlerBlock(disks, "disk01")+"TARGET_DRIVER iscsi {\n    enabled 1\n    IncomingUser \""+
		discoUser+" "+discoSecret+"\"\n"+target, nodetest.Options{})
	ctx := testCtx(t, 60*time.Second)

	cases := []struct {
		name   string
		node   *nodetest.Node
		opts   []initiator.Option
		refuse bool
	}{
		{"no discovery CHAP configured, none offered", open, nil, false},
		{"no discovery CHAP configured, CHAP offered", open, []initiator.Option{initiator.WithCHAP(discoUser, discoSecret)}, false},
		{"discovery CHAP, right secret", guarded, []initiator.Option{initiator.WithCHAP(discoUser, discoSecret)}, false},
		{"discovery CHAP, SHA-256", guarded, []initiator.Option{initiator.WithCHAP(discoUser, discoSecret),
			func(c *initiator.Config) { c.CHAPAlgorithms = []int{initiator.CHAPSHA256} }}, false},
		{"discovery CHAP, no credentials", guarded, nil, true},
		{"discovery CHAP, wrong secret", guarded, []initiator.Option{initiator.WithCHAP(discoUser, "12charwrongone")}, true},
		{"discovery CHAP, target's users are not discovery users", guarded, []initiator.Option{initiator.WithCHAP(chapUser, chapSecret)}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			targets, err := initiator.Discover(ctx, tc.node.Addr(), "iqn.2024-01.io.hatarget:disco", tc.opts...)
			if tc.refuse {
				le, ok := loginError(err)
				if !ok || le.Class != pdu.LoginInitiatorErr || le.Detail != pdu.LoginDetailAuthFailed {
					t.Fatalf("discovery returned %v, %v; want status 0201 (authentication failure)", targets, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(targets) != 1 || targets[0].Name != guideIQN {
				t.Fatalf("SendTargets=All: %+v", targets)
			}
		})
	}

	// Discovery CHAP guards discovery only: the target has no IncomingUser
	// of its own, so normal logins need no credentials.
	s := dial(t, ctx, initiator.Config{Addr: guarded.Addr(), TargetName: guideIQN})
	if err := s.TestUnitReady(ctx, 0); err != nil {
		t.Fatal(err)
	}
}

// TestCHAPLibiscsi logs in with libiscsi, which asks to leave the security
// stage in its very first request (offering CHAP,None): the target must keep
// it there until the CHAP exchange is done, then admit the right secret and
// refuse a wrong one.
func TestCHAPLibiscsi(t *testing.T) {
	t.Parallel()
	inq := nodetest.LookTool(t, "iscsi-inq", "libiscsi-bin")
	disks := makeDisks(t, "disk01")
	conf := handlerBlock(disks, "disk01") + `
TARGET_DRIVER iscsi {
    enabled 1
    TARGET ` + chapIQN + ` {
        IncomingUser "` + chapUser + ` ` + chapSecret + `"
        LUN 0 disk01
        enabled 1
    }
}
`
	n := nodetest.Start(t, conf, nodetest.Options{})
	ctx := testCtx(t, 60*time.Second)
	url := func(secret string) string {
		return "iscsi://" + chapUser + "%" + secret + "@" + n.Addr() + "/" + chapIQN + "/0"
	}
	if out, err := nodetest.RunTool(ctx, inq, url(chapSecret)); err != nil || !strings.Contains(out, "Peripheral Device Type") {
		t.Fatalf("iscsi-inq with the right secret: %v\n%s", err, out)
	}
	if out, err := nodetest.RunTool(ctx, inq, url("12charsecret?")); err == nil {
		t.Fatalf("iscsi-inq with a wrong secret logged in:\n%s", out)
	}
}
