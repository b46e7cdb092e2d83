package main

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hatarget/hatarget/cluster"
	"github.com/hatarget/hatarget/cluster/pki"
)

// tlsFiles are the agent's --tls-* files; ok is false when none is set.
// Some but not all is a mistake that would leave a channel plain.
func (o agentOptions) tlsFiles() (files pki.Files, ok bool, err error) {
	files = pki.Files{CA: o.tlsCA, Cert: o.tlsCert, Key: o.tlsKey}
	set := 0
	for _, f := range []string{files.CA, files.Cert, files.Key} {
		if f != "" {
			set++
		}
	}
	switch set {
	case 0:
		return files, false, nil
	case 3:
		return files, true, nil
	}
	return files, false, errors.New("--tls-ca, --tls-cert and --tls-key go together: give all three (hatarget tls cert create writes them) or none")
}

// loadAgentTLS loads the node's credentials, when configured, before any
// listener opens: a node must never serve a channel in plain TCP because
// its certificate was mistyped. The certificate's expiry is exported as a
// metric, so that an alert fires before the node is cut off.
func loadAgentTLS(o agentOptions, log *slog.Logger, reg prometheus.Registerer) (*pki.Credentials, error) {
	files, ok, err := o.tlsFiles()
	if err != nil || !ok {
		return nil, err
	}
	creds, err := pki.Load(files, o.name)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert: %w", err)
	}
	logCredentials(log, creds, "TLS credentials loaded")
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "hatarget_tls_cert_expiry_timestamp_seconds",
		Help: "When the node's TLS certificate expires (Unix time); reloaded on SIGHUP.",
	}, func() float64 { return float64(creds.Leaf().NotAfter.Unix()) }))
	return creds, nil
}

func logCredentials(log *slog.Logger, creds *pki.Credentials, msg string) {
	leaf := creds.Leaf()
	log.Info(msg, "identity", creds.Identity().String(), "serial", leaf.SerialNumber.Text(16),
		"not_after", leaf.NotAfter, "issuer", leaf.Issuer.CommonName)
}

// agentNetwork is the node network: mutual TLS with the --tls-* files,
// whose reloading r takes on, else plain TCP.
func agentNetwork(o agentOptions, log *slog.Logger, reg prometheus.Registerer, r *reloader) (*cluster.Network, error) {
	creds, err := loadAgentTLS(o, log, reg)
	if err != nil || creds == nil {
		return cluster.NewNetwork(), err
	}
	r.tls = creds
	network := cluster.NewTLSNetwork(creds, log)
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "hatarget_tls_refused_connections_total",
		Help: "Connections to the node channels refused at the TLS handshake (no, or a wrong, certificate; not a member).",
	}, func() float64 { return float64(network.Refused()) }))
	return network, nil
}

func (o agentOptions) parseGossipKey() ([]byte, error) {
	if o.gossipKey == "" {
		return nil, nil
	}
	key, err := cluster.ParseGossipKey(o.gossipKey)
	if err != nil {
		return nil, fmt.Errorf("--gossip-key: %w", err)
	}
	return key, nil
}
