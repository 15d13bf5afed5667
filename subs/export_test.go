package subs

// SetHistoryRead sets the hook called when a history request holds its
// account's slot; the returned function removes it.
func SetHistoryRead(f func()) (restore func()) {
	historyRead = f
	return func() { historyRead = nil }
}
