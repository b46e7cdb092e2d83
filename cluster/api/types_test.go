package api

import (
	"strconv"
	"testing"
)

func TestVersionNumberMatchesPrefix(t *testing.T) {
	if want := "v" + strconv.Itoa(VersionNumber); Version != want {
		t.Errorf("Version is %q, VersionNumber %d makes it %q", Version, VersionNumber, want)
	}
}
