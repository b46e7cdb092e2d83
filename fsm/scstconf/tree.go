package scstconf

import (
	"fmt"
	"strings"
)

// maxDepth bounds block nesting. Real files nest four deep (TARGET_DRIVER,
// TARGET, GROUP, LUN); the bound keeps hostile input from exhausting the
// stack.
const maxDepth = 8

// stmt is one statement of the generic syntax tree: the words of a line and
// the block that follows them, if any. Meaning is assigned later, so the
// syntax is handled in one place.
type stmt struct {
	words    []token // at least one
	block    []*stmt
	hasBlock bool
	open     Pos // the "{" of the block
}

func (s *stmt) keyword() string { return s.words[0].text }
func (s *stmt) pos() Pos        { return s.words[0].pos }
func (s *stmt) args() []token   { return s.words[1:] }

// joined returns the words after the keyword separated by single spaces, so
// that `IncomingUser joe secret` means the same as `IncomingUser "joe secret"`.
func (s *stmt) joined() string {
	parts := make([]string, len(s.args()))
	for i, t := range s.args() {
		parts[i] = t.text
	}
	return strings.Join(parts, " ")
}

type treeParser struct {
	toks []token
	i    int
}

func buildTree(toks []token) ([]*stmt, error) {
	p := &treeParser{toks: toks}
	return p.stmts(nil, 0)
}

// stmts reads statements up to the "}" closing opener, or to the end of the
// input when opener is nil.
func (p *treeParser) stmts(opener *stmt, depth int) ([]*stmt, error) {
	var list []*stmt
	for {
		t := p.toks[p.i]
		switch t.kind {
		case tNewline:
			p.i++
		case tEOF:
			if opener != nil {
				return nil, &Error{Pos: opener.open,
					Msg: fmt.Sprintf("unterminated %s block: missing \"}\"", opener.keyword())}
			}
			return list, nil
		case tRBrace:
			if opener == nil {
				return nil, &Error{Pos: t.pos, Msg: `unexpected "}" with no open block`}
			}
			p.i++
			return list, nil
		case tLBrace:
			return nil, &Error{Pos: t.pos, Msg: `"{" must follow a keyword such as DEVICE or TARGET`}
		case tWord:
			s, err := p.stmt(depth)
			if err != nil {
				return nil, err
			}
			list = append(list, s)
		}
	}
}

// stmt reads the words of one statement and its block. The block's "{" may
// be on a later line, as long as only blank or comment lines come between.
func (p *treeParser) stmt(depth int) (*stmt, error) {
	s := &stmt{}
	for p.toks[p.i].kind == tWord {
		s.words = append(s.words, p.toks[p.i])
		p.i++
	}
	j := p.i
	for p.toks[j].kind == tNewline {
		j++
	}
	if p.toks[j].kind != tLBrace {
		return s, nil
	}
	if depth >= maxDepth {
		return nil, &Error{Pos: p.toks[j].pos, Msg: "blocks nested too deeply"}
	}
	s.hasBlock = true
	s.open = p.toks[j].pos
	p.i = j + 1
	block, err := p.stmts(s, depth+1)
	if err != nil {
		return nil, err
	}
	s.block = block
	return s, nil
}
