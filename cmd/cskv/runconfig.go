package main

import (
	"flag"
	"fmt"

	"github.com/cskv/cskv/flagfile"
	"github.com/cskv/cskv/train"
)

// notInConfig are the flags of train and init that say how to run the
// command, not what to compute: a config file may not set them and the
// written DIR/config.yaml leaves them out.
var notInConfig = []string{"config", "out", "resume", "force", "json", "quiet", "log-level", "log-format", "from", "shard"}

// applyConfigFile sets, under the flags given on the command line, the
// values of the --config file.
func applyConfigFile(fs *flag.FlagSet, path string) error {
	if path == "" {
		return nil
	}
	if err := flagfile.Apply(fs, path, notInConfig...); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}

// applyRecorded makes cfg the configuration recorded in the run directory
// dir, then sets again every flag given on the command line or by the
// config file: they are checked against the recording by the resume rules
// (problem settings must agree; steering settings change with a warning).
func applyRecorded(fs *flag.FlagSet, cfg *train.Config, dir string) error {
	rec, err := train.RecordedConfig(dir)
	if err != nil {
		return err
	}
	given := map[string]string{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = f.Value.String() })
	*cfg = rec
	for name, v := range given {
		if err := fs.Set(name, v); err != nil {
			return fmt.Errorf("--%s %s: %v", name, v, err)
		}
	}
	return nil
}

// configNames are the flags written to DIR/config.yaml, in their order.
func configNames(fs *flag.FlagSet) []string {
	var names []string
	fs.VisitAll(func(f *flag.Flag) {
		for _, n := range notInConfig {
			if f.Name == n {
				return
			}
		}
		names = append(names, f.Name)
	})
	return names
}
