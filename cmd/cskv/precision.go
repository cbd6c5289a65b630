package main

import (
	"github.com/sirupsen/logrus"

	"github.com/cskv/cskv/linalg"
	"github.com/cskv/cskv/model"
)

const precisionUsage = "matrix products: f32, bf16 (bf16 operands, float32 accumulation; the oneDNN build) or auto (bf16 where the CPU has AVX512-BF16 or AMX)"

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
