package config

import (
	"strings"
	"testing"
	"time"
)

const minimal = "shards: [{name: s0, dsn: 'postgres://app@127.0.0.1:5432/app'}]\n"

func TestFreezeTimeout(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want time.Duration
		err  string
	}{
		{minimal, DefaultFreezeTimeout, ""},
		{minimal + "freeze_timeout: 250ms\n", 250 * time.Millisecond, ""},
		{minimal + "freeze_timeout: -1s\n", 0, "freeze_timeout: must be positive"},
		{minimal + "freeze_timeout: soon\n", 0, "invalid duration"},
	} {
		c, err := Parse([]byte(tc.yaml))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.yaml, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tc.yaml, err)
		}
		if c.FreezeTimeout.D() != tc.want {
			t.Errorf("%q: freeze_timeout %v, want %v", tc.yaml, c.FreezeTimeout.D(), tc.want)
		}
	}
}

func TestRebalanceCopyStreams(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want int
		err  string
	}{
		{minimal, 0, ""},
		{minimal + "rebalance: {copy_streams: 4}\n", 4, ""},
		{minimal + "rebalance: {copy_streams: -1}\n", 0, "rebalance.copy_streams: -1 is not between 1 and 16"},
		{minimal + "rebalance: {copy_streams: 17}\n", 0, "rebalance.copy_streams: 17 is not between 1 and 16"},
		{minimal + "rebalance: {copy_stream: 2}\n", 0, "copy_stream"},
	} {
		c, err := Parse([]byte(tc.yaml))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want one containing %q", tc.yaml, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tc.yaml, err)
		}
		if c.Rebalance.CopyStreams != tc.want {
			t.Errorf("%q: copy_streams %d, want %d", tc.yaml, c.Rebalance.CopyStreams, tc.want)
		}
	}
}
