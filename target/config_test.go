package target

import "testing"

func TestValidatePortals(t *testing.T) {
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"192.0.2.1:3260", true},
		{"[2001:db8::1]:3260", true},
		{"node1.example:3260", true},
		{"2001:db8::1:3260", false}, // IPv6 hosts must be bracketed
		{"192.0.2.1", false},
		{":3260", false},
		{"192.0.2.1:iscsi", false},
		{"192.0.2.1:0", false},
		{"192.0.2.1:65536", false},
	} {
		cfg := Config{Targets: []Target{{Name: "iqn.2024-01.io.hatarget.test:p", Portals: []Portal{{Addr: tc.addr, Tag: 1}}}}}
		if err := cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("portal %q: Validate() = %v, want ok %v", tc.addr, err, tc.ok)
		}
	}
}
