package cluster

import (
	"testing"

	"github.com/hatarget/hatarget/fsm"
)

// TestOwnCopy: a node deletes with a LUN only the copy the cluster
// created for it under its --storage-dir, never a path an operator gave
// nor a copy it does not hold.
func TestOwnCopy(t *testing.T) {
	me := localNode{name: "a", storageDir: "/var/lib/hatarget/luns"}
	replicated := func(path string, create bool, replicas ...string) *fsm.Device {
		return &fsm.Device{Name: "lun", Handler: fsm.HandlerFileIO, Path: path, Create: create, Replicas: replicas}
	}
	for _, tc := range []struct {
		name string
		d    *fsm.Device
		want bool
	}{
		{"created under the storage dir", replicated("lun.img", true, "a", "b"), true},
		{"at an operator's absolute path", replicated("/dev/vg/lun", true, "a", "b"), false},
		{"another node's copy", replicated("lun.img", true, "b", "c"), false},
		{"not created", replicated("lun.img", false, "a", "b"), false},
		{"shared storage", &fsm.Device{Name: "lun", Handler: fsm.HandlerFileIO, Path: "/srv/lun.img", Create: true}, false},
	} {
		dev := dataplaneDevice(tc.d, me)
		if dev.OwnCopy != tc.want {
			t.Errorf("%s: OwnCopy %v, want %v (path %s)", tc.name, dev.OwnCopy, tc.want, dev.Backend.Path)
		}
	}
}
