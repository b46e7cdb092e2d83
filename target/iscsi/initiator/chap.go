package initiator

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"strconv"
	"strings"
)

// chapHash maps a CHAP_A value to its hash function.
func chapHash(alg int) (func() hash.Hash, error) {
	switch alg {
	case CHAPMD5:
		return md5.New, nil
	case CHAPSHA256:
		return sha256.New, nil
	}
	return nil, fmt.Errorf("initiator: unsupported CHAP algorithm %d (want %d=MD5 or %d=SHA-256)", alg, CHAPMD5, CHAPSHA256)
}

// chapResponse computes H(id || secret || challenge) (RFC 1994 4.1).
func chapResponse(alg int, id byte, secret string, challenge []byte) ([]byte, error) {
	newHash, err := chapHash(alg)
	if err != nil {
		return nil, err
	}
	h := newHash()
	h.Write([]byte{id})
	h.Write([]byte(secret))
	h.Write(challenge)
	return h.Sum(nil), nil
}

// encodeCHAP renders binary CHAP values in hex, the form every target
// accepts.
func encodeCHAP(b []byte) string { return "0x" + hex.EncodeToString(b) }

// decodeCHAP parses a binary value in either RFC 7143 encoding: "0x" hex
// or "0b" base64.
func decodeCHAP(s string) ([]byte, error) {
	if len(s) < 3 || s[0] != '0' {
		return nil, fmt.Errorf("CHAP value %q is not 0x-hex or 0b-base64", s)
	}
	body := s[2:]
	switch s[1] {
	case 'x', 'X':
		if len(body)%2 == 1 {
			body = "0" + body // RFC 7143 6.1: an odd digit count has an implied leading 0
		}
		return hex.DecodeString(body)
	case 'b', 'B':
		if b, err := base64.StdEncoding.DecodeString(body); err == nil {
			return b, nil
		}
		return base64.RawStdEncoding.DecodeString(strings.TrimRight(body, "="))
	}
	return nil, fmt.Errorf("CHAP value %q is not 0x-hex or 0b-base64", s)
}

// parseCHAPID reads CHAP_I, a decimal (or 0x-hex) number in 0..255.
func parseCHAPID(s string) (byte, error) {
	v, err := strconv.ParseUint(s, 0, 8)
	if err != nil {
		return 0, fmt.Errorf("CHAP_I=%q: %w", s, err)
	}
	return byte(v), nil
}

// parseCHAPAlg picks the target's CHAP_A answer and checks that we offered
// it: a target may not choose an algorithm outside the offer.
func parseCHAPAlg(s string, offered []int) (int, error) {
	v, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("CHAP_A=%q is not a number", s)
	}
	for _, a := range offered {
		if a == v {
			return v, nil
		}
	}
	return 0, fmt.Errorf("target chose CHAP_A=%d, which was not offered (%v)", v, offered)
}

// mutualChallenge is what we send to make the target authenticate itself.
type mutualChallenge struct {
	id        byte
	challenge []byte
}

// newMutualChallenge draws a fresh identifier and a challenge as long as
// the digest. It never equals the target's challenge: reusing one would let
// a rogue target reflect our own response back to us.
func newMutualChallenge(alg int, targetChallenge []byte) (mutualChallenge, error) {
	newHash, err := chapHash(alg)
	if err != nil {
		return mutualChallenge{}, err
	}
	c := mutualChallenge{challenge: make([]byte, newHash().Size())}
	for {
		var id [1]byte
		_, _ = rand.Read(id[:])
		_, _ = rand.Read(c.challenge)
		c.id = id[0]
		if subtle.ConstantTimeCompare(c.challenge, targetChallenge) == 0 {
			return c, nil
		}
	}
}

// verify checks the target's CHAP_R against our challenge.
func (c mutualChallenge) verify(alg int, secret, response string) error {
	got, err := decodeCHAP(response)
	if err != nil {
		return fmt.Errorf("target CHAP_R: %w", err)
	}
	want, err := chapResponse(alg, c.id, secret, c.challenge)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return fmt.Errorf("target failed mutual CHAP: wrong CHAP_R")
	}
	return nil
}
