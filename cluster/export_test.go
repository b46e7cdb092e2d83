package cluster

// Test-only hooks for the external tests of this package (cluster_test),
// which run nodes through clustertest.

// CrashForTest stops the node as abruptly as a process can stop a part of
// itself: no leadership transfer, no gossip leave, no API drain. Raft and
// memberlist stop at once; the peers see the node fail.
func (n *Node) CrashForTest() error {
	var err error
	n.shutdownOnce.Do(func() {
		close(n.stop)
		if n.api != nil {
			_ = n.api.Close()
		}
		err = n.closeAll()
		n.wg.Wait()
	})
	return err
}
