package pki

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// File names. A node's certificate and key are named after the node, so
// that one directory can hold several (an operator's workstation, a
// directory of issued certificates); the CA certificate is copied beside
// them so that a node's directory is complete.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
	certExt    = ".crt"
	keyExt     = ".key"
)

// Modes: keys are for the owner alone, certificates are public, and a
// directory holding a key is closed to others.
const (
	dirMode  fs.FileMode = 0o700
	keyMode  fs.FileMode = 0o600
	certMode fs.FileMode = 0o644
)

// Files are the three files a node's TLS needs.
type Files struct {
	CA   string // the cluster CA certificate(s), PEM
	Cert string // the node's certificate, PEM, optionally followed by intermediates
	Key  string // the node's private key, PEM
}

// FilesIn names the files of the certificate of name in dir, as Issued.Write
// writes them.
func FilesIn(dir, name string) Files {
	return Files{
		CA:   filepath.Join(dir, CACertFile),
		Cert: filepath.Join(dir, name+certExt),
		Key:  filepath.Join(dir, name+keyExt),
	}
}

// pendingFile is a file to write.
type pendingFile struct {
	path string
	data []byte
	mode fs.FileMode
}

// writeFiles writes files into dir (created 0700 when missing) all or
// nothing as far as it can: it refuses when one exists, unless force,
// before it writes anything, then writes each under a temporary name and
// renames them only once all are written, so that an interrupted command
// leaves no key without its certificate.
func writeFiles(dir string, force bool, files ...pendingFile) error {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	if !force {
		for _, f := range files {
			if _, err := os.Lstat(f.path); err == nil {
				return fmt.Errorf("%s exists; not overwriting it without --force", f.path)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	temps := make([]string, 0, len(files))
	defer func() {
		for _, t := range temps {
			os.Remove(t) // gone already once renamed
		}
	}()
	for _, f := range files {
		tmp, err := writeTemp(f)
		if err != nil {
			return err
		}
		temps = append(temps, tmp)
	}
	for i, f := range files {
		if err := os.Rename(temps[i], f.path); err != nil {
			return fmt.Errorf("writing %s: %w", f.path, err)
		}
	}
	return nil
}

// writeTemp writes f under a temporary name beside it, with f's mode set
// before any data is written, and syncs it.
func writeTemp(f pendingFile) (name string, err error) {
	tmp, err := os.CreateTemp(filepath.Dir(f.path), "."+filepath.Base(f.path)+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("writing %s: %w", f.path, err)
	}
	defer func() {
		if cerr := tmp.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("writing %s: %w", f.path, cerr)
		}
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(f.mode); err != nil {
		return "", fmt.Errorf("writing %s: %w", f.path, err)
	}
	if _, err := tmp.Write(f.data); err != nil {
		return "", fmt.Errorf("writing %s: %w", f.path, err)
	}
	if err := tmp.Sync(); err != nil {
		return "", fmt.Errorf("writing %s: %w", f.path, err)
	}
	return tmp.Name(), nil
}

// readKeyFile reads a private key file, refusing one that group or others
// can access: a key others could read is as good as published, and saying
// so beats serving with it. The mode is checked on the open file, so that
// it is the mode of what is read.
func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("key file %s has mode %04o, which lets group or others access it: chmod 600 %s", path, perm, path)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return data, nil
}

// readCerts reads every certificate of a PEM file. A CA file may hold
// several, the old and the new CA while the cluster moves to a new one.
func readCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("certificate file: %w", err)
	}
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate file %s: %w", path, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("certificate file %s holds no PEM certificate", path)
	}
	return certs, nil
}

// parseKey reads a PEM private key: PKCS#8, as this package writes, or the
// SEC 1 and PKCS#1 forms openssl writes, so that a CA made with openssl
// can issue too.
func parseKey(path string, data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("key file %s holds no PEM key", path)
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("key file %s: PEM block %q is not a private key", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key file %s: unsupported key type %T", path, key)
	}
	return signer, nil
}
