package fsm

import (
	"slices"
	"sort"
)

// Command types for targets.
const (
	TypeCreateTarget CommandType = "create_target"
	TypeDeleteTarget CommandType = "delete_target"
	TypeSetTarget    CommandType = "set_target"
	TypeSetCHAP      CommandType = "set_chap"
	TypeSetACL       CommandType = "set_acl"
)

// CreateTarget adds an enabled target with no LUNs.
type CreateTarget struct {
	IQN   string `json:"iqn"`
	Alias string `json:"alias,omitempty"`
}

func (*CreateTarget) Type() CommandType { return TypeCreateTarget }

func (c *CreateTarget) check() error { return CheckIQN(c.IQN) }

func (c *CreateTarget) apply(s *State, _ Env) (any, error) {
	if s.Targets[c.IQN] != nil {
		return nil, errorf(CodeConflict, "target %s already exists", c.IQN)
	}
	t := &Target{IQN: c.IQN, Alias: c.Alias, Enabled: true}
	s.Targets[c.IQN] = t
	return t, nil
}

// DeleteTarget removes a target. A target with LUNs is refused unless
// Force, which deletes its LUNs like DeleteLUN.
type DeleteTarget struct {
	IQN   string `json:"iqn"`
	Force bool   `json:"force,omitempty"`
}

func (*DeleteTarget) Type() CommandType { return TypeDeleteTarget }

func (c *DeleteTarget) check() error { return CheckIQN(c.IQN) }

func (c *DeleteTarget) apply(s *State, _ Env) (any, error) {
	t := s.Targets[c.IQN]
	if t == nil {
		return nil, errorf(CodeNotFound, "no target %s", c.IQN)
	}
	devices := t.devices()
	if len(devices) > 0 && !c.Force {
		return nil, errorf(CodeConflict, "target %s still maps %d LUN(s); delete them first or force", c.IQN, len(devices))
	}
	delete(s.Targets, c.IQN)
	for _, d := range devices {
		s.dropIfUnmapped(d)
	}
	return nil, nil
}

// devices lists the devices t maps, in any of its maps.
func (t *Target) devices() []string {
	var out []string
	for _, l := range t.LUNs {
		out = append(out, l.Device)
	}
	for _, g := range t.Groups {
		for _, l := range g.LUNs {
			out = append(out, l.Device)
		}
	}
	return out
}

// SetTarget changes a target's alias, enabled flag and negotiation
// parameters. Nil fields are left alone; a parameter with an empty value is
// removed.
type SetTarget struct {
	IQN     string  `json:"iqn"`
	Alias   *string `json:"alias,omitempty"`
	Enabled *bool   `json:"enabled,omitempty"`
	Params  []Param `json:"params,omitempty"`
}

func (*SetTarget) Type() CommandType { return TypeSetTarget }

func (c *SetTarget) check() error {
	if err := CheckIQN(c.IQN); err != nil {
		return err
	}
	for _, p := range c.Params {
		if err := checkParam(p); err != nil {
			return err
		}
	}
	return nil
}

func (c *SetTarget) apply(s *State, _ Env) (any, error) {
	t, err := s.editTarget(c.IQN)
	if err != nil {
		return nil, err
	}
	if c.Alias != nil {
		t.Alias = *c.Alias
	}
	if c.Enabled != nil {
		t.Enabled = *c.Enabled
	}
	for _, p := range c.Params {
		t.Params = slices.DeleteFunc(t.Params, func(q Param) bool { return q.Key == p.Key })
		if p.Value != "" {
			t.Params = append(t.Params, p)
		}
	}
	sort.Slice(t.Params, func(i, j int) bool { return t.Params[i].Key < t.Params[j].Key })
	return t, nil
}

// editTarget replaces the target iqn in s by a copy the caller may change.
func (s *State) editTarget(iqn string) (*Target, error) {
	t := s.Targets[iqn]
	if t == nil {
		return nil, errorf(CodeNotFound, "no target %s", iqn)
	}
	t = t.clone()
	s.Targets[iqn] = t
	return t, nil
}

// SetCHAP replaces a target's CHAP credentials: Incoming nil clears
// inbound CHAP (no authentication), Mutual nil clears mutual CHAP.
type SetCHAP struct {
	IQN      string     `json:"iqn"`
	Incoming []CHAPUser `json:"incoming,omitempty"`
	Mutual   *CHAPUser  `json:"mutual,omitempty"`
}

func (*SetCHAP) Type() CommandType { return TypeSetCHAP }

func (c *SetCHAP) check() error {
	if err := CheckIQN(c.IQN); err != nil {
		return err
	}
	for _, u := range c.Incoming {
		if err := checkCHAP(u, "incoming"); err != nil {
			return err
		}
	}
	if c.Mutual != nil {
		if len(c.Incoming) == 0 {
			return errorf(CodeInvalid, "mutual CHAP needs an incoming CHAP user too")
		}
		if err := checkCHAP(*c.Mutual, "mutual"); err != nil {
			return err
		}
	}
	return nil
}

func (c *SetCHAP) apply(s *State, _ Env) (any, error) {
	t, err := s.editTarget(c.IQN)
	if err != nil {
		return nil, err
	}
	t.IncomingUsers = slices.Clone(c.Incoming)
	t.OutgoingUser = nil
	if c.Mutual != nil {
		u := *c.Mutual
		t.OutgoingUser = &u
	}
	return nil, nil
}

// SetACL allows or stops allowing an initiator (name or pattern) to log in
// to a target. A target without any allowed initiator admits every one.
type SetACL struct {
	IQN       string `json:"iqn"`
	Initiator string `json:"initiator"`
	Allow     bool   `json:"allow"`
}

func (*SetACL) Type() CommandType { return TypeSetACL }

func (c *SetACL) check() error {
	if err := CheckIQN(c.IQN); err != nil {
		return err
	}
	return checkInitiatorPattern(c.Initiator)
}

func (c *SetACL) apply(s *State, _ Env) (any, error) {
	t, err := s.editTarget(c.IQN)
	if err != nil {
		return nil, err
	}
	has := slices.Contains(t.AllowedInitiators, c.Initiator)
	switch {
	case c.Allow && has:
		return nil, errorf(CodeConflict, "target %s already allows %s", c.IQN, c.Initiator)
	case !c.Allow && !has:
		return nil, errorf(CodeNotFound, "target %s has no ACL entry %s", c.IQN, c.Initiator)
	case c.Allow:
		t.AllowedInitiators = append(t.AllowedInitiators, c.Initiator)
	default:
		t.AllowedInitiators = slices.DeleteFunc(t.AllowedInitiators, func(p string) bool { return p == c.Initiator })
	}
	return nil, nil
}
