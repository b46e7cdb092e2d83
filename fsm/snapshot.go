package fsm

import "encoding/json"

// SnapshotFormat is the version of the snapshot encoding; a snapshot of a
// later format is refused rather than half read.
const SnapshotFormat = 1

type snapshotFile struct {
	Format   int    `json:"format"`
	Protocol uint16 `json:"protocol"`
	State    *State `json:"state"`
}

// MarshalSnapshot serialises s deterministically (map keys sorted).
func MarshalSnapshot(s *State) ([]byte, error) {
	return json.Marshal(snapshotFile{Format: SnapshotFormat, Protocol: Protocol, State: s})
}

// UnmarshalSnapshot restores a state, refusing unknown formats and fields.
func UnmarshalSnapshot(b []byte) (*State, error) {
	var head struct {
		Format int `json:"format"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return nil, errorf(CodeInvalid, "snapshot: %v", err)
	}
	if head.Format != SnapshotFormat {
		return nil, errorf(CodeUnsupported, "snapshot format %d is not supported by this binary (it reads format %d)", head.Format, SnapshotFormat)
	}
	var f snapshotFile
	if err := DecodeStrict(b, &f); err != nil {
		return nil, errorf(CodeUnsupported, "snapshot: %v", err)
	}
	if f.State == nil {
		return nil, errorf(CodeInvalid, "snapshot has no state")
	}
	if err := f.State.checkStoredTokens(); err != nil {
		return nil, err
	}
	s := f.State.next()
	return s, nil
}
