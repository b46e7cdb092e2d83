package cluster

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/target/durable"
)

// Gossip encryption. memberlist encrypts every gossip message with the
// primary key of its keyring and decrypts with any key of it, so a key is
// rotated the way Consul does it, each step on every member before the
// next: install the new key (all decrypt it), use it (all encrypt with
// it), remove the old one. The keyring is saved in the data directory
// after every change, so a restarted node comes back with the keys the
// others use now rather than the --gossip-key it was first started with.

// keyringFile holds the keyring in the data directory, mode 0600.
const keyringFile = "gossip-keyring.json"

// keyringTimeout bounds a keyring operation's round of the nodes.
const keyringTimeout = 10 * time.Second

// savedKeyring is keyringFile's content.
type savedKeyring struct {
	// Keys are base64, the primary first.
	Keys []string `json:"keys"`
}

// ParseGossipKey reads a gossip key: base64 of 16, 24 or 32 bytes
// (AES-128, -192 or -256), as `openssl rand -base64 32` prints.
func ParseGossipKey(s string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("gossip key is not base64: %w", err)
	}
	if err := memberlist.ValidateKey(key); err != nil {
		return nil, fmt.Errorf("gossip key of %d bytes: want 16, 24 or 32 (openssl rand -base64 32)", len(key))
	}
	return key, nil
}

func encodeKey(key []byte) string { return base64.StdEncoding.EncodeToString(key) }

// openKeyring returns the gossip keyring: the one saved in the data
// directory, else one made of Config.GossipKey (and saved), else nil when
// gossip is not encrypted.
func (n *Node) openKeyring() (*memberlist.Keyring, error) {
	path := filepath.Join(n.cfg.DataDir, keyringFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && n.cfg.GossipKey == nil:
		if n.network.TLS() {
			// Live gossip members are admitted to the node channels (to
			// bootstrap and join), so plain gossip lets anyone holding a
			// certificate of the CA in.
			n.log.Warn("gossip is not encrypted while the node channels use TLS: anyone who reaches the gossip port can join; set --gossip-key")
		}
		return nil, nil
	case errors.Is(err, fs.ErrNotExist):
		kr, err := memberlist.NewKeyring(nil, n.cfg.GossipKey)
		if err != nil {
			return nil, fmt.Errorf("cluster: gossip key: %w", err)
		}
		if err := saveKeyring(path, kr); err != nil {
			return nil, err
		}
		return kr, nil
	case err != nil:
		return nil, fmt.Errorf("cluster: gossip keyring: %w", err)
	}
	kr, err := decodeKeyring(b)
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip keyring %s: %w", path, err)
	}
	if n.cfg.GossipKey != nil && !slices.ContainsFunc(kr.GetKeys(), func(k []byte) bool { return string(k) == string(n.cfg.GossipKey) }) {
		n.log.Warn("--gossip-key is not in the keyring this node saved; the saved keyring is used (the cluster rotated its keys since)", "file", path)
	}
	return kr, nil
}

func decodeKeyring(b []byte) (*memberlist.Keyring, error) {
	var s savedKeyring
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, err
	}
	if len(s.Keys) == 0 {
		return nil, errors.New("no keys")
	}
	keys := make([][]byte, 0, len(s.Keys))
	for _, k := range s.Keys {
		key, err := ParseGossipKey(k)
		if err != nil {
			return nil, err
		}
		keys = append(keys, key)
	}
	return memberlist.NewKeyring(keys, keys[0])
}

func saveKeyring(path string, kr *memberlist.Keyring) error {
	var s savedKeyring
	for _, k := range kr.GetKeys() {
		s.Keys = append(s.Keys, encodeKey(k))
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := durable.WriteFile(path, b); err != nil {
		return fmt.Errorf("cluster: saving the gossip keyring: %w", err)
	}
	return nil
}

// keyringRoutes serves the keyring: /v1/keyring runs an operation on
// every node; /v1/internal/keyring is one node's part of it, which the
// route table (auth.go) leaves to nodes.
func (n *Node) keyringRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/keyring", n.handleKeyringList)
	mux.HandleFunc("POST /v1/keyring", n.handleKeyringChange)
	mux.HandleFunc("GET /v1/internal/keyring", n.handleLocalKeyring)
	mux.HandleFunc("POST /v1/internal/keyring", n.handleLocalKeyringChange)
}

func (n *Node) handleLocalKeyring(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, n.localKeyring())
}

func (n *Node) handleLocalKeyringChange(w http.ResponseWriter, r *http.Request) {
	var c api.KeyringChange
	if err := decodeBody(r, &c); err != nil {
		writeErr(w, err)
		return
	}
	if err := n.changeLocalKeyring(c); err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, n.localKeyring())
}

func (n *Node) handleKeyringList(w http.ResponseWriter, r *http.Request) {
	if n.keyring == nil {
		writeErr(w, errNotEncrypted)
		return
	}
	writeJSON(w, http.StatusOK, n.keyringRound(r.Context(), nil))
}

func (n *Node) handleKeyringChange(w http.ResponseWriter, r *http.Request) {
	var c api.KeyringChange
	if err := decodeBody(r, &c); err != nil {
		writeErr(w, err)
		return
	}
	if _, err := parseKeyringChange(c); err != nil {
		writeErr(w, err)
		return
	}
	if n.keyring == nil {
		writeErr(w, errNotEncrypted)
		return
	}
	if c.Op == api.KeyringUse {
		if err := n.checkInstalledEverywhere(r.Context(), c.Key); err != nil {
			writeErr(w, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, n.keyringRound(r.Context(), &c))
}

var errNotEncrypted = &api.Error{Status: http.StatusConflict, Code: api.CodeConflict,
	Message: "gossip is not encrypted on this node: start every node with --gossip-key to use a keyring"}

// checkInstalledEverywhere refuses to make a key primary before every
// node has it: a node without it could not read what the others send,
// and gossip would declare it dead.
func (n *Node) checkInstalledEverywhere(ctx context.Context, key string) error {
	var missing []string
	for _, kn := range n.keyringRound(ctx, nil).Nodes {
		if kn.Error != "" || !slices.Contains(kn.Keys, key) {
			missing = append(missing, kn.Node)
		}
	}
	if len(missing) > 0 {
		return &api.Error{Status: http.StatusConflict, Code: api.CodeConflict,
			Message: fmt.Sprintf("the key is not installed on %v (or they did not answer): install it everywhere first", missing)}
	}
	return nil
}

func parseKeyringChange(c api.KeyringChange) ([]byte, error) {
	switch c.Op {
	case api.KeyringInstall, api.KeyringUse, api.KeyringRemove:
	default:
		return nil, badRequest("keyring operation %q: want %s, %s or %s", c.Op, api.KeyringInstall, api.KeyringUse, api.KeyringRemove)
	}
	key, err := ParseGossipKey(c.Key)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	return key, nil
}

// changeLocalKeyring applies an operation to this node's keyring and
// saves the result; operations are serialized so that the saved file is
// always the keyring of the last one.
func (n *Node) changeLocalKeyring(c api.KeyringChange) error {
	key, err := parseKeyringChange(c)
	if err != nil {
		return err
	}
	if n.keyring == nil {
		return errNotEncrypted
	}
	n.keyringMu.Lock()
	defer n.keyringMu.Unlock()
	switch c.Op {
	case api.KeyringInstall:
		err = n.keyring.AddKey(key)
	case api.KeyringUse:
		err = n.keyring.UseKey(key)
	case api.KeyringRemove:
		err = n.keyring.RemoveKey(key)
	}
	if err != nil {
		return &api.Error{Status: http.StatusConflict, Code: api.CodeConflict, Message: "gossip keyring: " + err.Error()}
	}
	n.log.Info("gossip keyring changed", "op", c.Op, "keys", len(n.keyring.GetKeys()))
	return saveKeyring(filepath.Join(n.cfg.DataDir, keyringFile), n.keyring)
}

func (n *Node) localKeyring() api.KeyringNode {
	kn := api.KeyringNode{Node: n.cfg.Name}
	if n.keyring == nil {
		kn.Error = errNotEncrypted.Message
		return kn
	}
	n.keyringMu.Lock()
	defer n.keyringMu.Unlock()
	kn.Primary = encodeKey(n.keyring.GetPrimaryKey())
	for _, k := range n.keyring.GetKeys() {
		kn.Keys = append(kn.Keys, encodeKey(k))
	}
	return kn
}

// keyringRound runs an operation (nil: a listing) on every node gossip
// sees alive, in parallel, and reports the registered nodes it could not
// reach as failed: each must get the change before the next step.
func (n *Node) keyringRound(ctx context.Context, c *api.KeyringChange) *api.KeyringResult {
	ctx, cancel := context.WithTimeout(ctx, keyringTimeout)
	defer cancel()
	peers := n.keyringPeers()
	res := &api.KeyringResult{Nodes: make([]api.KeyringNode, len(peers))}
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Go(func() { res.Nodes[i] = n.keyringOn(ctx, p, c) })
	}
	wg.Wait()
	return res
}

// keyringPeer is a node a keyring round visits; apiAddr is empty when
// gossip does not see it alive.
type keyringPeer struct{ name, apiAddr string }

func (n *Node) keyringPeers() []keyringPeer {
	byName := map[string]string{}
	for name := range n.fsm.State().Nodes {
		byName[name] = ""
	}
	for name, m := range n.members() {
		if m.State == memberlist.StateAlive && m.MetaErr == nil {
			byName[name] = m.Meta.API
		} else if _, ok := byName[name]; !ok && m.State != memberlist.StateLeft {
			byName[name] = ""
		}
	}
	peers := make([]keyringPeer, 0, len(byName))
	for name, addr := range byName {
		peers = append(peers, keyringPeer{name: name, apiAddr: addr})
	}
	sort.Slice(peers, func(i, j int) bool { return peers[i].name < peers[j].name })
	return peers
}

func (n *Node) keyringOn(ctx context.Context, p keyringPeer, c *api.KeyringChange) api.KeyringNode {
	if p.name == n.cfg.Name {
		if c != nil {
			if err := n.changeLocalKeyring(*c); err != nil {
				return api.KeyringNode{Node: p.name, Error: err.Error()}
			}
		}
		return n.localKeyring()
	}
	if p.apiAddr == "" {
		return api.KeyringNode{Node: p.name, Error: "not alive in gossip; run the operation again once it is back"}
	}
	client := &api.Client{Base: "http://" + p.apiAddr, Token: n.cfg.Token, HTTP: n.forward}
	var kn api.KeyringNode
	var err error
	if c == nil {
		err = client.Do(ctx, http.MethodGet, "/v1/internal/keyring", nil, &kn)
	} else {
		err = client.Do(ctx, http.MethodPost, "/v1/internal/keyring", c, &kn)
	}
	if err != nil {
		return api.KeyringNode{Node: p.name, Error: err.Error()}
	}
	kn.Node = p.name
	return kn
}
