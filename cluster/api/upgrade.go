package api

import (
	"context"
	"net/http"
)

// FinalizeResult is the answer of POST /v1/upgrade/finalize.
type FinalizeResult struct {
	// ClusterVersion is the active cluster version now; Previous the one
	// before (equal when the upgrade was finalized already).
	ClusterVersion uint16 `json:"cluster_version"`
	Previous       uint16 `json:"previous"`
	Generation     uint64 `json:"generation"`
}

// FinalizeUpgrade raises the active cluster version to the highest the
// leader's release supports, once every voter and every node holding a
// replica runs a release that supports it.
func (c *Client) FinalizeUpgrade(ctx context.Context) (*FinalizeResult, error) {
	var r FinalizeResult
	return &r, c.Do(ctx, http.MethodPost, "/v1/upgrade/finalize", nil, &r)
}
