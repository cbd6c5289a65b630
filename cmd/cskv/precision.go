package main

import (
	"flag"
	"fmt"

	"github.com/sirupsen/logrus"

	"github.com/cskv/cskv/linalg"
	"github.com/cskv/cskv/model"
)

// precisionFlag is --precision, the arithmetic of the matrix products.
type precisionFlag struct{ name string }

func (p *precisionFlag) register(fs *flag.FlagSet, def string) {
	fs.StringVar(&p.name, "precision", def, precisionUsage)
}

const precisionUsage = "matrix products: f32, bf16 (bf16 operands, float32 accumulation; the oneDNN build) or auto (bf16 where the CPU has AVX512-BF16 or AMX)"

// apply parses the flag and selects the precision for the whole program.
func (p *precisionFlag) apply() (linalg.Precision, error) {
	prec, err := linalg.ParsePrecision(p.name)
	if err == nil {
		err = linalg.SetPrecision(prec)
	}
	if err != nil {
		return 0, fmt.Errorf("%w: --precision: %v", errUsage, err)
	}
	return linalg.CurrentPrecision(), nil
}

// start parses a command's flags, configures its logger and selects the
// precision of its matrix products (--precision).
func start(fs *flag.FlagSet, args []string, lf *logFlags, pf *precisionFlag) (*logrus.Logger, error) {
	if err := parse(fs, args); err != nil {
		return nil, err
	}
	log, err := lf.logger()
	if err != nil {
		return nil, err
	}
	if _, err := pf.apply(); err != nil {
		return nil, err
	}
	return log, nil
}

// openWarn opens --model and warns when its width runs slowly on this build.
func openWarn(log *logrus.Logger, path string) (*model.Model, error) {
	m, err := openModel(path)
	if err != nil {
		return nil, err
	}
	warnSlow(log, m.Config.Hidden)
	return m, nil
}

// warnSlow logs when a model of this width would run slowly on this build.
func warnSlow(log *logrus.Logger, width int) {
	if w := linalg.SlowBackend(width); w != "" {
		log.Warn(w)
	}
}
