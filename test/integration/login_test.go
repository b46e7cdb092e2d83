package integration

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/pdu"
)

// securityStageKeys are the only keys open-iscsi accepts in a Login Response
// of the security stage (usr/login.c, get_security_text_keys): anything
// else fails its login with "can't accept ... in security stage".
var securityStageKeys = map[string]bool{
	"TargetAlias": true, "TargetAddress": true, "TargetPortalGroupTag": true,
	"AuthMethod": true, "CHAP_A": true, "CHAP_I": true, "CHAP_C": true, "CHAP_N": true, "CHAP_R": true,
}

// TestOpenISCSILoginTranscript replays the login open-iscsi performs without
// CHAP (security stage with AuthMethod=None, then its operational offer) and
// checks each response against what open-iscsi accepts, for normal and
// discovery sessions.
func TestOpenISCSILoginTranscript(t *testing.T) {
	t.Parallel()
	n, _ := startGuideNode(t)

	cases := []struct {
		name      string
		discovery bool
		offer     []pdu.KV
	}{
		{"normal session", false, []pdu.KV{
			{Key: "HeaderDigest", Value: "None"}, {Key: "DataDigest", Value: "None"},
			{Key: "DefaultTime2Wait", Value: "2"}, {Key: "DefaultTime2Retain", Value: "0"},
			{Key: "IFMarker", Value: "No"}, {Key: "OFMarker", Value: "No"},
			{Key: "ErrorRecoveryLevel", Value: "0"},
			{Key: "InitialR2T", Value: "No"}, {Key: "ImmediateData", Value: "Yes"},
			{Key: "MaxBurstLength", Value: "16776192"}, {Key: "FirstBurstLength", Value: "262144"},
			{Key: "MaxOutstandingR2T", Value: "1"}, {Key: "MaxConnections", Value: "1"},
			{Key: "DataPDUInOrder", Value: "Yes"}, {Key: "DataSequenceInOrder", Value: "Yes"},
			{Key: "MaxRecvDataSegmentLength", Value: "262144"},
		}},
		// iscsiadm -m discovery: its MaxRecvDataSegmentLength (32768) is not
		// the default, so it negotiates in the operational stage too.
		{"discovery session", true, []pdu.KV{
			{Key: "HeaderDigest", Value: "None"}, {Key: "DataDigest", Value: "None"},
			{Key: "DefaultTime2Wait", Value: "2"}, {Key: "DefaultTime2Retain", Value: "0"},
			{Key: "IFMarker", Value: "No"}, {Key: "OFMarker", Value: "No"},
			{Key: "ErrorRecoveryLevel", Value: "0"},
			{Key: "MaxRecvDataSegmentLength", Value: "32768"},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := rawDial(t, n.Addr())
			first := []pdu.KV{
				{Key: "InitiatorName", Value: "iqn.1993-08.org.debian:01:transcript"},
				{Key: "InitiatorAlias", Value: "transcript"},
			}
			if tc.discovery {
				first = append(first, pdu.KV{Key: "SessionType", Value: "Discovery"})
			} else {
				first = append(first, pdu.KV{Key: "TargetName", Value: guideIQN}, pdu.KV{Key: "SessionType", Value: "Normal"})
			}
			first = append(first, pdu.KV{Key: "AuthMethod", Value: "None"})
			if err := r.loginReq(true, false, pdu.StageSecurity, pdu.StageOperational, first); err != nil {
				t.Fatal(err)
			}
			resp, kvs, err := r.loginResp()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusClass != pdu.LoginSuccess || !resp.Transit || resp.CSG != pdu.StageSecurity || resp.NSG != pdu.StageOperational {
				t.Fatalf("security stage answered status %#02x%02x T=%v CSG=%d NSG=%d",
					resp.StatusClass, resp.StatusDetail, resp.Transit, resp.CSG, resp.NSG)
			}
			for _, kv := range kvs {
				if !securityStageKeys[kv.Key] {
					t.Errorf("security stage Login Response carries %s=%s: open-iscsi fails the login on it", kv.Key, kv.Value)
				}
			}

			if err := r.loginReq(true, false, pdu.StageOperational, pdu.StageFullFeature, tc.offer); err != nil {
				t.Fatal(err)
			}
			resp, kvs, err = r.loginResp()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusClass != pdu.LoginSuccess || !resp.Transit || resp.NSG != pdu.StageFullFeature {
				t.Fatalf("operational stage answered status %#02x%02x T=%v NSG=%d",
					resp.StatusClass, resp.StatusDetail, resp.Transit, resp.NSG)
			}
			got := map[string]string{}
			for _, kv := range kvs {
				got[kv.Key] = kv.Value
			}
			// The target's receive limit is declarative: unless declared in
			// this stage, open-iscsi keeps the RFC default of 8192.
			if v, ok := got["MaxRecvDataSegmentLength"]; !ok {
				t.Errorf("operational stage does not declare the target's MaxRecvDataSegmentLength (got %v)", kvs)
			} else if n, err := strconv.Atoi(v); err != nil || n < 512 {
				t.Errorf("MaxRecvDataSegmentLength=%s", v)
			}
			if !tc.discovery {
				fb, _ := strconv.Atoi(got["FirstBurstLength"])
				mb, _ := strconv.Atoi(got["MaxBurstLength"])
				if fb == 0 || mb == 0 || fb > mb {
					t.Errorf("FirstBurstLength=%s MaxBurstLength=%s", got["FirstBurstLength"], got["MaxBurstLength"])
				}
			}
			for _, kv := range tc.offer {
				if _, ok := got[kv.Key]; !ok && kv.Key != "MaxRecvDataSegmentLength" {
					t.Errorf("offered %s=%s, no answer", kv.Key, kv.Value)
				}
			}
			if _, err := r.nop(0x10); err != nil {
				t.Fatalf("after login: %v", err)
			}
		})
	}
}

// TestLoginRefusals sends malformed or inadmissible Login Requests: each
// must be refused with the status RFC 7143 11.13.5 gives for it, and the
// connection closed.
func TestLoginRefusals(t *testing.T) {
	t.Parallel()
	n, _ := startGuideNode(t)
	const me = "iqn.2024-01.io.hatarget:refused"
	normal := []pdu.KV{{Key: "InitiatorName", Value: me}, {Key: "SessionType", Value: "Normal"}, {Key: "TargetName", Value: guideIQN}}

	cases := []struct {
		name   string
		send   func(r *rawConn) error
		detail byte // status class is always 02, initiator error
	}{
		{"unknown target", func(r *rawConn) error {
			return r.loginReq(true, false, pdu.StageOperational, pdu.StageFullFeature, []pdu.KV{
				{Key: "InitiatorName", Value: me}, {Key: "SessionType", Value: "Normal"}, {Key: "TargetName", Value: "iqn.2024-01.io.hatarget:nope"}})
		}, pdu.LoginDetailNotFound},
		{"no TargetName in a normal session", func(r *rawConn) error {
			return r.loginReq(true, false, pdu.StageOperational, pdu.StageFullFeature, normal[:2])
		}, pdu.LoginDetailMissingParam},
		{"no InitiatorName", func(r *rawConn) error {
			return r.loginReq(true, false, pdu.StageOperational, pdu.StageFullFeature, normal[1:])
		}, pdu.LoginDetailMissingParam},
		{"unsupported version", func(r *rawConn) error {
			var h pdu.Header
			data := textOf(normal)
			(&pdu.LoginReq{Transit: true, CSG: pdu.StageOperational, NSG: pdu.StageFullFeature, VersionMax: 2, VersionMin: 1,
				DataLen: len(data), ISID: r.isid, CmdSN: 1}).Marshal(&h)
			return r.write(&h, data)
		}, pdu.LoginDetailUnsupportedVer},
		{"TSIH of a session that does not exist", func(r *rawConn) error {
			var h pdu.Header
			data := textOf(normal)
			(&pdu.LoginReq{Transit: true, CSG: pdu.StageOperational, NSG: pdu.StageFullFeature,
				DataLen: len(data), ISID: r.isid, TSIH: 0x7777, CmdSN: 1}).Marshal(&h)
			return r.write(&h, data)
		}, pdu.LoginDetailNoSession},
		{"C and T bits together", func(r *rawConn) error {
			return r.loginReq(true, true, pdu.StageOperational, pdu.StageFullFeature, normal)
		}, pdu.LoginDetailInitiatorError},
		{"key repeated", func(r *rawConn) error {
			return r.loginReq(true, false, pdu.StageOperational, pdu.StageFullFeature, append(normal[:3:3],
				pdu.KV{Key: "MaxBurstLength", Value: "65536"}, pdu.KV{Key: "MaxBurstLength", Value: "65536"}))
		}, pdu.LoginDetailInitiatorError},
		{"transition backwards", func(r *rawConn) error {
			return r.loginReq(true, false, pdu.StageOperational, pdu.StageSecurity, normal)
		}, pdu.LoginDetailInitiatorError},
		{"bogus SessionType", func(r *rawConn) error {
			return r.loginReq(true, false, pdu.StageOperational, pdu.StageFullFeature, []pdu.KV{
				{Key: "InitiatorName", Value: me}, {Key: "SessionType", Value: "Bogus"}, {Key: "TargetName", Value: guideIQN}})
		}, pdu.LoginDetailInitiatorError},
		{"ISID changed during login", func(r *rawConn) error {
			if err := r.loginReq(false, false, pdu.StageOperational, 0, normal); err != nil {
				return err
			}
			if resp, _, err := r.loginResp(); err != nil || resp.StatusClass != pdu.LoginSuccess {
				return fmt.Errorf("first PDU: %+v, %v", resp, err)
			}
			r.isid[5]++
			return r.loginReq(true, false, pdu.StageOperational, pdu.StageFullFeature, nil)
		}, pdu.LoginDetailInitiatorError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := rawDial(t, n.Addr())
			if err := tc.send(r); err != nil {
				t.Fatal(err)
			}
			resp, _, err := r.loginResp()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusClass != pdu.LoginInitiatorErr || resp.StatusDetail != tc.detail {
				t.Fatalf("status %#02x%02x, want 02%02x", resp.StatusClass, resp.StatusDetail, tc.detail)
			}
			r.expectClosed(5 * time.Second)
		})
	}
}

func textOf(kvs []pdu.KV) []byte {
	var b []byte
	for _, kv := range kvs {
		b = pdu.AppendText(b, kv.Key, kv.Value)
	}
	return b
}
