package integration

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hatarget/hatarget/test/nodetest"
)

// TestGuideLibiscsiTools serves the deployment guide's scst.conf unchanged
// and points libiscsi's command line tools at it, as the README tells users.
func TestGuideLibiscsiTools(t *testing.T) {
	t.Parallel()
	ls := nodetest.LookTool(t, "iscsi-ls", "libiscsi-bin")
	inq := nodetest.LookTool(t, "iscsi-inq", "libiscsi-bin")
	n, _ := startGuideNode(t)
	ctx := testCtx(t, 60*time.Second)

	out, err := nodetest.RunTool(ctx, ls, "-s", "iscsi://"+n.Addr())
	if err != nil {
		t.Fatalf("iscsi-ls -s: %v\n%s", err, out)
	}
	for _, want := range []string{
		"Target:" + guideIQN + " Portal:" + n.Addr() + ",1",
		"Lun:0    Type:DIRECT_ACCESS",
		"Lun:1    Type:DIRECT_ACCESS",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("iscsi-ls output lacks %q:\n%s", want, out)
		}
	}

	for _, lun := range []int{0, 1} {
		url := fmt.Sprintf("iscsi://%s/%s/%d", n.Addr(), guideIQN, lun)
		out, err := nodetest.RunTool(ctx, inq, url)
		if err != nil {
			t.Errorf("iscsi-inq %s: %v\n%s", url, err, out)
			continue
		}
		for _, want := range []string{"Peripheral Qualifier:CONNECTED", "Peripheral Device Type:DIRECT_ACCESS"} {
			if !strings.Contains(out, want) {
				t.Errorf("iscsi-inq %s output lacks %q:\n%s", url, want, out)
			}
		}
	}

	// A LUN the guide does not map must be refused, not invented.
	url := fmt.Sprintf("iscsi://%s/%s/2", n.Addr(), guideIQN)
	if out, err := nodetest.RunTool(ctx, inq, url); err == nil && strings.Contains(out, "Peripheral Qualifier:CONNECTED") {
		t.Errorf("iscsi-inq %s reports a connected LU for an unmapped LUN:\n%s", url, out)
	}
}

// TestGuideQemuIO drives QEMU's iSCSI block driver (libiscsi inside qemu)
// against the guide's configuration with pattern writes and verified reads,
// including sizes and offsets that are not multiples of the bursts.
func TestGuideQemuIO(t *testing.T) {
	t.Parallel()
	qemu := nodetest.LookTool(t, "qemu-io", "qemu-utils qemu-block-extra")
	n, disks := startGuideNode(t)
	ctx := testCtx(t, 90*time.Second)
	url := fmt.Sprintf("iscsi://%s/%s/1", n.Addr(), guideIQN)

	// qemu-io links the iscsi protocol from a module that may be absent.
	if out, err := nodetest.RunTool(ctx, qemu, "-f", "raw", "-c", "read 0 512", url); err != nil {
		if strings.Contains(out, "Unknown protocol") || strings.Contains(out, "Unknown driver") {
			t.Skipf("qemu-io lacks the iscsi protocol (apt-get install qemu-block-extra): %s", strings.TrimSpace(out))
		}
		t.Fatalf("qemu-io read 0 512: %v\n%s", err, out)
	}

	cases := []struct {
		name    string
		pattern byte
		offset  int64
		size    int64
	}{
		{"1M at 0", 0xab, 0, 1 << 20},
		{"300k at 1M", 0x5a, 1 << 20, 300 << 10},
		{"4M spanning bursts", 0xc3, 4 << 20, 4 << 20},
		{"unaligned offset and size", 0x17, 9<<20 + 1000, 70001},
		{"one sector at the end", 0xe1, diskSize - 512, 512},
	}
	// The group returns when all its parallel cases have finished.
	t.Run("patterns", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				write := fmt.Sprintf("write -P 0x%02x %d %d", tc.pattern, tc.offset, tc.size)
				read := fmt.Sprintf("read -P 0x%02x %d %d", tc.pattern, tc.offset, tc.size)
				out, err := nodetest.RunTool(ctx, qemu, "-f", "raw", "-c", write, "-c", read, url)
				if err != nil {
					t.Fatalf("qemu-io -c %q -c %q: %v\n%s", write, read, err, out)
				}
				if strings.Contains(out, "Pattern verification failed") || strings.Contains(out, "failed:") {
					t.Fatalf("qemu-io -c %q -c %q:\n%s", write, read, out)
				}
				for _, want := range []string{
					fmt.Sprintf("wrote %d/%d bytes at offset %d", tc.size, tc.size, tc.offset),
					fmt.Sprintf("read %d/%d bytes at offset %d", tc.size, tc.size, tc.offset),
				} {
					if !strings.Contains(out, want) {
						t.Fatalf("qemu-io output lacks %q:\n%s", want, out)
					}
				}
				onDisk, err := readFileAt(disks["disk02"], tc.offset, int(tc.size))
				if err != nil {
					t.Fatal(err)
				}
				if i := firstDiff(onDisk, bytes.Repeat([]byte{tc.pattern}, int(tc.size))); i >= 0 {
					t.Fatalf("disk02's backing file differs from the pattern at byte %d of the write", i)
				}
			})
		}
	})

	// The verification above is only worth something if qemu-io does
	// report a mismatch.
	t.Run("mismatch is detected", func(t *testing.T) {
		out, _ := nodetest.RunTool(ctx, qemu, "-f", "raw", "-c", "read -P 0x00 0 4096", url)
		if !strings.Contains(out, "Pattern verification failed") {
			t.Fatalf("reading the 0xab region as 0x00 did not fail verification:\n%s", out)
		}
	})
}
