//go:build race

package evloop

// raceEnabled: the race detector slows everything several times over, so
// that a coroutine may pass the watchdog's stall limit without being stuck.
const raceEnabled = true
