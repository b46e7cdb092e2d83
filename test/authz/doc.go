// Package authz tests the management API's authorization end to end, with
// three real `hatarget agent` processes (test/nodetest): every route of the
// router, called through a follower by each role, is refused (403, naming
// the role it needs) exactly to the roles below the one it needs; a
// revoked token is refused by all three nodes within a second; and the
// audit log names the token of every change the test made, with no secret
// in it, in the nodes' logs or in any -o json output but the one that
// creates a token.
//
// The package holds only tests; this file exists so that it is a package
// with documentation even when built without them.
package authz
