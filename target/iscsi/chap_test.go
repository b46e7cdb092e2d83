package iscsi

import (
	"crypto/md5"
	"encoding/hex"
	"testing"
)

func TestCHAPResponseMD5(t *testing.T) {
	a, _ := findCHAPAlgorithm(5)
	challenge := []byte{1, 2, 3, 4}
	got := chapResponse(a, 7, "secretsecret", challenge)
	h := md5.New()
	h.Write([]byte{7})
	h.Write([]byte("secretsecret"))
	h.Write(challenge)
	if hex.EncodeToString(got) != hex.EncodeToString(h.Sum(nil)) {
		t.Fatalf("MD5 response mismatch")
	}
}

func TestChooseCHAPAlgorithm(t *testing.T) {
	for offer, want := range map[string]int{"5": 5, "7,5": 7, "5,7": 5, "99,7": 7, "8": 8} {
		a, ok := chooseCHAPAlgorithm(offer)
		if !ok || a.id != want {
			t.Errorf("offer %q: got %d %v, want %d", offer, a.id, ok, want)
		}
	}
	if _, ok := chooseCHAPAlgorithm("1,2"); ok {
		t.Error("unsupported algorithms accepted")
	}
}

func TestCHAPVerifyAndMutual(t *testing.T) {
	a, _ := findCHAPAlgorithm(7)
	id, challenge, err := newChallenge(a)
	if err != nil {
		t.Fatal(err)
	}
	x := &chapExchange{algo: a, id: id, challenge: challenge}
	users := []CHAPUser{{User: "joe", Secret: "12charsecret"}}
	good := encodeCHAPBinary(chapResponse(a, id, "12charsecret", challenge))
	if _, err := x.verify(users, "joe", good); err != nil {
		t.Fatalf("valid response refused: %v", err)
	}
	if _, err := x.verify(users, "ann", good); err == nil {
		t.Fatal("unknown user accepted")
	}
	bad := encodeCHAPBinary(chapResponse(a, id, "wrongsecret!", challenge))
	if _, err := x.verify(users, "joe", bad); err == nil {
		t.Fatal("wrong secret accepted")
	}
	if _, err := x.mutualResponse(CHAPUser{User: "tgt", Secret: "targetsecret"}, "3", encodeCHAPBinary(challenge)); err == nil {
		t.Fatal("reflected challenge answered")
	}
	if _, err := x.mutualResponse(CHAPUser{User: "tgt", Secret: "targetsecret"}, "3", "0x0102030405060708"); err != nil {
		t.Fatalf("mutual response: %v", err)
	}
}

func TestDecodeCHAPBinary(t *testing.T) {
	for in, ok := range map[string]bool{"0x0a0b": true, "0xabc": true, "0bAQID": true, "0x": false, "abc": false, "0xzz": false} {
		_, err := decodeCHAPBinary(in)
		if (err == nil) != ok {
			t.Errorf("%q: err=%v, want ok=%v", in, err, ok)
		}
	}
}
