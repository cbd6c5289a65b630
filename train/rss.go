package train

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// PeakRSS returns the process's peak resident set size in bytes (VmHWM from
// /proc/self/status), or 0 where that is unavailable.
func PeakRSS() int64 { return procKB("/proc/self/status", "VmHWM:") }

// memTotal returns the machine's memory in bytes (MemTotal from
// /proc/meminfo), or 0 where that is unavailable.
func memTotal() int64 { return procKB("/proc/meminfo", "MemTotal:") }

// procKB reads the "key  N kB" line of a /proc file, in bytes (0 where the
// file or the line is missing or malformed).
func procKB(path, key string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), key); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}
