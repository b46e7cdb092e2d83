package conformance

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// TrimOutput copies verbose iscsi-test-cu output from r to w, keeping every
// line the parser depends on (suite and test headers, verdicts, skip and
// failure markers, warnings, the Run Summary) and at most keep other lines
// per test. It exists because a -V run is megabytes of SCSI command
// logging, too much to check in as a fixture, while what matters for
// verdicts is a few hundred lines. ParseOutput gives the same verdicts for
// the trimmed copy as for the original.
//
// keep is raised to 1 so the first failed assertion after FAILED survives:
// it is the failure detail when a test printed no "[FAILED]" message.
func TrimOutput(r io.Reader, w io.Writer, keep int) error {
	keep = max(keep, 1)
	br := bufio.NewReader(r)
	bw := bufio.NewWriter(w)
	kept, dropped := 0, 0
	inSummary := false
	flushDropped := func() {
		if dropped > 0 {
			fmt.Fprintf(bw, "    [... %d lines trimmed ...]\n", dropped)
			dropped = 0
		}
	}
	for {
		line, err := br.ReadString('\n')
		if len(line) > 0 {
			text := strings.TrimRight(line, "\r\n")
			structural := suiteRE.MatchString(text) || testRE.MatchString(text)
			if summaryRE.MatchString(text) {
				inSummary = true
			}
			switch {
			case structural:
				flushDropped()
				kept = 0
				bw.WriteString(text + "\n")
			case inSummary || mustKeep(text):
				flushDropped()
				if isVerdict(text) {
					// The failed-assertion list after FAILED gets its own
					// budget, since it says what broke.
					kept = 0
				}
				bw.WriteString(text + "\n")
			case kept < keep:
				kept++
				bw.WriteString(text + "\n")
			default:
				dropped++
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("trimming iscsi-test-cu output: %w", err)
		}
	}
	flushDropped()
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing trimmed output: %w", err)
	}
	return nil
}

func isVerdict(line string) bool {
	return strings.HasPrefix(line, "passed") || strings.HasPrefix(line, "FAILED")
}

func mustKeep(line string) bool {
	return isVerdict(line) ||
		strings.Contains(line, skipMarker) ||
		strings.Contains(line, failMarker) ||
		strings.Contains(line, "WARNING - Suite") ||
		strings.HasPrefix(line, "error:")
}
