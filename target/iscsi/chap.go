package iscsi

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha3"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
)

// CHAPUser is one CHAP credential.
type CHAPUser struct {
	User   string
	Secret string
}

// chapAlgorithm is a CHAP_A value with its hash (RFC 7143 12.1.3 and the
// IANA registry: 5 MD5, 6 SHA-1, 7 SHA-256, 8 SHA3-256).
type chapAlgorithm struct {
	id  int
	new func() hash.Hash
}

// chapAlgorithms is our order of preference when the initiator offers
// several: the strongest first.
var chapAlgorithms = []chapAlgorithm{
	{8, func() hash.Hash { return sha3.New256() }},
	{7, sha256.New},
	{6, sha1.New},
	{5, md5.New},
}

func findCHAPAlgorithm(id int) (chapAlgorithm, bool) {
	for _, a := range chapAlgorithms {
		if a.id == id {
			return a, true
		}
	}
	return chapAlgorithm{}, false
}

// chooseCHAPAlgorithm picks from the initiator's CHAP_A list. RFC 7143 says
// the target picks the first value it supports in the initiator's order.
func chooseCHAPAlgorithm(offer string) (chapAlgorithm, bool) {
	for _, v := range strings.Split(offer, ",") {
		id, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			continue
		}
		if a, ok := findCHAPAlgorithm(id); ok {
			return a, true
		}
	}
	return chapAlgorithm{}, false
}

// chapResponse computes H(id || secret || challenge) (RFC 1994).
func chapResponse(a chapAlgorithm, id byte, secret string, challenge []byte) []byte {
	h := a.new()
	h.Write([]byte{id})
	h.Write([]byte(secret))
	h.Write(challenge)
	return h.Sum(nil)
}

// newChallenge returns a fresh random identifier and challenge as long as
// the hash output, so the challenge carries as much entropy as the response.
func newChallenge(a chapAlgorithm) (byte, []byte, error) {
	buf := make([]byte, 1+a.new().Size())
	if _, err := rand.Read(buf); err != nil {
		return 0, nil, fmt.Errorf("random CHAP challenge: %w", err)
	}
	return buf[0], buf[1:], nil
}

// maxCHAPBinary bounds a decoded CHAP_C/CHAP_R: RFC 7143 allows up to 1024
// bytes for a challenge; anything longer is hostile.
const maxCHAPBinary = 1024

var errCHAPEncoding = errors.New("CHAP value is not 0x-hex or 0b-base64")

// decodeCHAPBinary reads a CHAP binary value: 0x hex or 0b base64.
func decodeCHAPBinary(v string) ([]byte, error) {
	if len(v) < 3 || len(v) > 2+2*maxCHAPBinary {
		return nil, errCHAPEncoding
	}
	var b []byte
	var err error
	switch v[:2] {
	case "0x", "0X":
		s := v[2:]
		if len(s)%2 == 1 {
			s = "0" + s
		}
		b, err = hex.DecodeString(s)
	case "0b", "0B":
		b, err = base64.StdEncoding.DecodeString(v[2:])
	default:
		return nil, errCHAPEncoding
	}
	if err != nil || len(b) == 0 || len(b) > maxCHAPBinary {
		return nil, errCHAPEncoding
	}
	return b, nil
}

func encodeCHAPBinary(b []byte) string { return "0x" + hex.EncodeToString(b) }

// chapExchange is the target side of one CHAP authentication.
type chapExchange struct {
	algo      chapAlgorithm
	id        byte
	challenge []byte
}

// verify checks the initiator's CHAP_N/CHAP_R against the configured users
// and returns the user that matched. Every user's response is computed and
// compared in constant time, whatever the name, so the time taken tells
// neither which names exist nor how much of a response was right.
func (x *chapExchange) verify(users []CHAPUser, name, response string) (CHAPUser, error) {
	resp, err := decodeCHAPBinary(response)
	if err != nil {
		return CHAPUser{}, fmt.Errorf("CHAP_R: %w", err)
	}
	match := -1
	for i, u := range users {
		want := chapResponse(x.algo, x.id, u.Secret, x.challenge)
		ok := subtle.ConstantTimeCompare([]byte(u.User), []byte(name)) & subtle.ConstantTimeCompare(want, resp)
		match = subtle.ConstantTimeSelect(ok, i, match)
	}
	if match < 0 {
		return CHAPUser{}, fmt.Errorf("CHAP authentication failed for user %q", name)
	}
	return users[match], nil
}

// mutualResponse answers the initiator's challenge with our outgoing secret.
// A challenge equal to ours is a reflection attack: answering it would hand
// the initiator the response it owes us.
func (x *chapExchange) mutualResponse(out CHAPUser, idValue, challengeValue string) (string, error) {
	id, err := strconv.ParseUint(idValue, 0, 8)
	if err != nil {
		return "", fmt.Errorf("CHAP_I %q: %w", idValue, err)
	}
	challenge, err := decodeCHAPBinary(challengeValue)
	if err != nil {
		return "", fmt.Errorf("CHAP_C: %w", err)
	}
	if subtle.ConstantTimeCompare(challenge, x.challenge) == 1 {
		return "", errors.New("initiator reflected the target's CHAP challenge")
	}
	return encodeCHAPBinary(chapResponse(x.algo, byte(id), out.Secret, challenge)), nil
}
