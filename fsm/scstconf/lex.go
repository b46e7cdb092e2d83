package scstconf

import "bytes"

type tokKind int

const (
	tWord tokKind = iota
	tNewline
	tLBrace
	tRBrace
	tEOF
)

type token struct {
	kind tokKind
	text string // the decoded word, for tWord
	pos  Pos
}

// isSpace reports whether c separates words. Newline is not among them:
// it ends a statement.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'
}

// isEscapable reports whether a backslash before c makes c literal. The set
// is kept small so that backslashes in ordinary values (paths, regexps)
// survive without doubling.
func isEscapable(c byte) bool {
	return c == '#' || c == '"' || c == '\\' || c == '{' || c == '}'
}

// endsWord reports whether c ends an unquoted word.
func endsWord(c byte) bool {
	return isSpace(c) || c == '\n' || c == '{' || c == '}' || c == '"' || c == '#'
}

type lexer struct {
	file      string
	src       []byte
	off       int
	line      int
	lineStart int
	toks      []token
}

var utf8BOM = []byte("\xef\xbb\xbf")

// lex splits src into tokens, ending with tEOF. Comments vanish here, so
// the parser never sees them.
func lex(file string, src []byte) ([]token, error) {
	lx := &lexer{file: file, src: src, line: 1}
	if bytes.HasPrefix(src, utf8BOM) {
		lx.off = len(utf8BOM)
		lx.lineStart = lx.off
	}
	for lx.off < len(lx.src) {
		if err := lx.next(); err != nil {
			return nil, err
		}
	}
	lx.emit(tEOF, "", lx.pos())
	return lx.toks, nil
}

func (lx *lexer) pos() Pos {
	return Pos{File: lx.file, Line: lx.line, Col: lx.off - lx.lineStart + 1}
}

func (lx *lexer) emit(kind tokKind, text string, p Pos) {
	lx.toks = append(lx.toks, token{kind: kind, text: text, pos: p})
}

func (lx *lexer) next() error {
	c := lx.src[lx.off]
	switch {
	case isSpace(c):
		lx.off++
	case c == '\n':
		lx.emit(tNewline, "", lx.pos())
		lx.off++
		lx.line++
		lx.lineStart = lx.off
	case c == '#':
		lx.skipComment()
	case c == '{':
		lx.emit(tLBrace, "", lx.pos())
		lx.off++
	case c == '}':
		lx.emit(tRBrace, "", lx.pos())
		lx.off++
	case c == '"':
		return lx.quoted()
	default:
		lx.bare()
	}
	return nil
}

func (lx *lexer) skipComment() {
	for lx.off < len(lx.src) && lx.src[lx.off] != '\n' {
		lx.off++
	}
}

// escaped reports whether the byte at lx.off starts an escape sequence.
func (lx *lexer) escaped() bool {
	return lx.src[lx.off] == '\\' && lx.off+1 < len(lx.src) && isEscapable(lx.src[lx.off+1])
}

func (lx *lexer) bare() {
	start := lx.pos()
	var w []byte
	for lx.off < len(lx.src) {
		if lx.escaped() {
			w = append(w, lx.src[lx.off+1])
			lx.off += 2
			continue
		}
		c := lx.src[lx.off]
		if endsWord(c) {
			break
		}
		w = append(w, c)
		lx.off++
	}
	lx.emit(tWord, string(w), start)
}

// quoted reads a double-quoted word. A quote may not span lines: a missing
// closing quote would otherwise swallow the rest of the file and the error
// would point far from the mistake.
func (lx *lexer) quoted() error {
	start := lx.pos()
	lx.off++
	w := []byte{}
	for lx.off < len(lx.src) && lx.src[lx.off] != '\n' {
		if lx.escaped() {
			w = append(w, lx.src[lx.off+1])
			lx.off += 2
			continue
		}
		c := lx.src[lx.off]
		lx.off++
		if c == '"' {
			lx.emit(tWord, string(w), start)
			return nil
		}
		w = append(w, c)
	}
	return &Error{Pos: start, Msg: "unterminated quoted string"}
}
