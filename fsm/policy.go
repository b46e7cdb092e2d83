package fsm

import "slices"

// Rules that new configuration follows but that applying a command does
// not enforce: entries already in the log (written by a release without
// the rule) must still apply, identically on every node. The cluster
// checks them before it proposes a command (CheckPolicy); a single node
// checks its configuration file with CheckCHAPSecrets.

// MinCHAPSecret is the shortest CHAP secret new configuration may set:
// the 96 bits RFC 7143's CHAP considerations ask for without IPsec; a
// shorter one falls to an offline guess from one captured exchange.
const MinCHAPSecret = 12

// CheckPolicy refuses a command that sets CHAP secrets CheckCHAPSecrets
// refuses.
func CheckPolicy(c Command) error {
	switch c := c.(type) {
	case *SetCHAP:
		return CheckCHAPSecrets("target "+c.IQN, secrets(c.Incoming), secret(c.Mutual))
	case *Import:
		for _, t := range c.Targets {
			if err := CheckCHAPSecrets("target "+t.IQN, secrets(t.IncomingUsers), secret(t.OutgoingUser)); err != nil {
				return err
			}
		}
		return CheckCHAPSecrets("discovery", secrets(c.DiscoveryUsers), "")
	}
	return nil
}

// CheckCHAPSecrets refuses, for what (a target, discovery), a secret
// shorter than MinCHAPSecret, and a mutual secret ("": none) equal to an
// incoming one: an initiator could then answer the target's challenge
// with the target's own answer (a reflection).
func CheckCHAPSecrets(what string, incoming []string, mutual string) error {
	for _, s := range incoming {
		if len(s) < MinCHAPSecret {
			return errorf(CodeInvalid, "%s: an incoming CHAP secret is %d bytes; secrets need at least %d", what, len(s), MinCHAPSecret)
		}
	}
	if mutual == "" {
		return nil
	}
	if len(mutual) < MinCHAPSecret {
		return errorf(CodeInvalid, "%s: the mutual CHAP secret is %d bytes; secrets need at least %d", what, len(mutual), MinCHAPSecret)
	}
	if slices.Contains(incoming, mutual) {
		return errorf(CodeInvalid, "%s: the mutual CHAP secret equals an incoming one; they must differ", what)
	}
	return nil
}

func secret(u *CHAPUser) string {
	if u == nil {
		return ""
	}
	return u.Secret
}

func secrets(users []CHAPUser) []string {
	out := make([]string, len(users))
	for i, u := range users {
		out[i] = u.Secret
	}
	return out
}
