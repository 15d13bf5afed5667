package filter

// Globs: '*' matches any run of bytes, '?' one byte, [abc] / [a-z] / [!a-z]
// one byte from (or not from) a set, and '\' makes the next byte literal.
// Matching is on bytes and never allocates.

// checkGlob returns "" when pattern is well formed, else what is wrong. It
// adds to *work the bytes it looks at, each once: its cost is linear.
func checkGlob(pattern string, work *int) string {
	for i := 0; i < len(pattern); i++ {
		*work++
		switch pattern[i] {
		case '\\':
			if i+1 >= len(pattern) {
				return `trailing "\"`
			}
			i++
		case '[':
			end := classEnd(pattern, i)
			if end < 0 {
				*work += len(pattern) - i
				return `unclosed "["`
			}
			*work += end - i
			i = end
		}
	}
	return ""
}

// classEnd returns the index of the ']' closing the class at p[i] == '[',
// or -1.
func classEnd(p string, i int) int {
	j := i + 1
	if j < len(p) && p[j] == '!' {
		j++
	}
	if j < len(p) && p[j] == ']' { // a leading ']' is literal
		j++
	}
	for ; j < len(p); j++ {
		switch p[j] {
		case '\\':
			j++
		case ']':
			return j
		}
	}
	return -1
}

// matchClass reports whether c is in the class p[i:end+1].
func matchClass(p string, i, end int, c byte) bool {
	j := i + 1
	neg := false
	if p[j] == '!' {
		neg = true
		j++
	}
	in := false
	first := true
	for j < end {
		lo := p[j]
		if lo == '\\' {
			j++
			lo = p[j]
		} else if lo == ']' && !first {
			break
		}
		first = false
		j++
		hi := lo
		if j+1 < end && p[j] == '-' {
			hi = p[j+1]
			if hi == '\\' && j+2 < end {
				hi = p[j+2]
				j++
			}
			j += 2
		}
		if lo <= c && c <= hi {
			in = true
		}
	}
	return in != neg
}

// glob reports whether s matches the well-formed pattern p.
func glob[S ~string | ~[]byte](p string, s S) bool {
	pi, si := 0, 0
	starP, starS := -1, 0
	for si < len(s) {
		if pi < len(p) {
			switch c := p[pi]; c {
			case '*':
				starP, starS = pi, si
				pi++
				continue
			case '?':
				pi++
				si++
				continue
			case '[':
				end := classEnd(p, pi)
				if matchClass(p, pi, end, s[si]) {
					pi = end + 1
					si++
					continue
				}
			case '\\':
				if p[pi+1] == s[si] {
					pi += 2
					si++
					continue
				}
			default:
				if c == s[si] {
					pi++
					si++
					continue
				}
			}
		}
		if starP < 0 {
			return false
		}
		starS++
		pi, si = starP+1, starS
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}
