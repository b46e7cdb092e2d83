// Package replication is the dataplane of synchronous replication: the
// owner of a LUN writes locally and to every in-sync replica and
// acknowledges only when all have the data, or when a replica that failed
// has been dropped from the in-sync set through the cluster (Membership).
//
// Server is the replica side, Peer the owner's connection to one replica,
// Volume the owner's replicated backend.Device, Bitmap the regions a
// replica may lack. Replicas refuse requests of an epoch older than the
// newest they have seen, and a seal of a new epoch waits for the older
// requests still running: a former owner's writes can never land after
// its successor took over. See DESIGN.md.
//
// It imports only the standard library, target/backend and target/nodeconn:
// the cluster hands it plain values and the Membership interface.
package replication
