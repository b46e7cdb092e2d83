package alua

import (
	"strings"
	"testing"
)

func TestMediaAccess(t *testing.T) {
	tests := []struct {
		state   State
		allowed bool
		sense   Sense
	}{
		{ActiveOptimized, true, Sense{}},
		{ActiveNonOptimized, true, Sense{}},
		{Standby, false, Sense{0x2, 0x04, 0x0B}},
		{Unavailable, false, Sense{0x2, 0x04, 0x0C}},
		{Transitioning, false, Sense{0x2, 0x04, 0x0A}},
		{Offline, false, Sense{0x2, 0x04, 0x0C}},
		{State(0x4), false, Sense{0x2, 0x04, 0x0C}}, // LBA dependent: not implemented, denied
		{State(0x9), false, Sense{0x2, 0x04, 0x0C}},
	}
	for _, tt := range tests {
		allowed, sense := tt.state.MediaAccess()
		if allowed != tt.allowed || sense != tt.sense {
			t.Errorf("%v.MediaAccess() = %v, %+v; want %v, %+v", tt.state, allowed, sense, tt.allowed, tt.sense)
		}
	}
}

func TestStateChangedSense(t *testing.T) {
	if want := (Sense{0x6, 0x2A, 0x06}); StateChanged != want {
		t.Fatalf("StateChanged = %+v, want %+v", StateChanged, want)
	}
}

func TestStateCodesAndNames(t *testing.T) {
	tests := []struct {
		state State
		code  uint8
		name  string
		conf  string
	}{
		{ActiveOptimized, 0x0, "active/optimized", "active"},
		{ActiveNonOptimized, 0x1, "active/non-optimized", "nonoptimized"},
		{Standby, 0x2, "standby", "standby"},
		{Unavailable, 0x3, "unavailable", "unavailable"},
		{Offline, 0xE, "offline", "offline"},
		{Transitioning, 0xF, "transitioning", "transitioning"},
	}
	for _, tt := range tests {
		if uint8(tt.state) != tt.code {
			t.Errorf("%s has code %#x, want %#x", tt.name, uint8(tt.state), tt.code)
		}
		if got := tt.state.String(); got != tt.name {
			t.Errorf("String() = %q, want %q", got, tt.name)
		}
		if !tt.state.Valid() {
			t.Errorf("%s not Valid", tt.name)
		}
		for _, text := range []string{tt.conf, tt.name, " " + tt.conf + "\n", strings.ToUpper(tt.conf)} {
			got, err := ParseState(text)
			if err != nil || got != tt.state {
				t.Errorf("ParseState(%q) = %v, %v; want %v", text, got, err, tt.state)
			}
		}
	}
}

func TestStateUnknown(t *testing.T) {
	for _, s := range []State{0x4, 0x5, 0xD, 0x10, 0xFF} {
		if s.Valid() {
			t.Errorf("%#x Valid", uint8(s))
		}
	}
	if got := State(0x4).String(); got != "state(0x4)" {
		t.Errorf("String() of 0x4 = %q", got)
	}
	for _, text := range []string{"", "optimized", "active/optimised", "lba", "state(0x4)"} {
		if s, err := ParseState(text); err == nil {
			t.Errorf("ParseState(%q) = %v, want an error", text, s)
		}
	}
}
