package cluster

import "errors"

// Test-only hooks for the external tests of this package (cluster_test),
// which run nodes through clustertest.

// CrashForTest stops the node as abruptly as a process can stop a part of
// itself: no leadership transfer, no gossip leave, no API drain. Raft
// stops first, so the peers see the node fail at once; gossip stops
// without a leave message once the node's loops have returned (the
// bootstrap loop may be waiting for a metadata broadcast, which only
// gossip completes).
func (n *Node) CrashForTest() error {
	var errs []error
	n.shutdownOnce.Do(func() {
		close(n.stop)
		if n.api != nil {
			_ = n.api.Close()
		}
		errs = append(errs, n.raft.Shutdown().Error(), n.trans.Close())
		n.wg.Wait()
		errs = append(errs, n.closeAll())
	})
	return errors.Join(errs...)
}
