// Command cskv compresses the key/value cache of Llama-family models by CSKV
// channel shrinking: it loads real models (GGUF or Hugging Face safetensors),
// measures them, initialises and trains low-rank K/V projections, and
// evaluates the compressed cache.
//
// Usage: cskv <command> [flags]; `cskv help` lists the commands and
// `cskv <command> -h` their flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/schollz/progressbar/v3"
	"github.com/sirupsen/logrus"
	"golang.org/x/term"

	"github.com/cskv/cskv/linalg"
	"github.com/cskv/cskv/train"
)

// command is one subcommand: run gets the command's flag set (newCLI, with
// the synopsis of its -h) and its arguments.
type command struct {
	name     string
	synopsis string
	summary  string
	run      func(ctx context.Context, c *cli, args []string) error
}

// commands is the table of subcommands, in the order `cskv help` lists them.
var commands []command

func init() {
	commands = []command{
		{"eval", "[--model M] [--data T] [flags]", "perplexity (and, with --projections, the compressed cache) on a model", runEval},
		{"generate", "[--model M] [--prompt P] [-n N]", "greedy text generation", runGenerate},
		{"inspect", "[--model M]", "print a model's configuration, tensors and the BLAS backend", runInspect},
		{"convert", "--model M.gguf --out DIR", "convert a GGUF model to a Hugging Face directory", runConvert},
		{"init", "[--model M --data T] --out P.safetensors [flags]", "initialise projections (svd, asvd or whiten) without training and write them", runInit},
		{"allocate", "--model M --data T --budget B --out plan.json [flags]", "choose the ranks per layer and side under a memory budget (--budget) and write the plan", runAllocate},
		{"train", "[--model M --data T] [--out DIR] [flags]", "the main job: capture, initialise and train the K/V factors layer by layer, export them", runTrain},
		{"capture", "--model M --data T (--shards N | --boundaries 0,a,b,…,L) --out DIR [flags]", "stage 1 of a sharded run: the residual stream at every shard's first layer, in a shared directory", runCapture},
		{"merge", "DIR --out projections.safetensors", "stage 3 of a sharded run: check the trained shards and write the projections file", runMerge},
		{"export", "--checkpoint DIR/ckpt-… --out P.safetensors | --format cskv-ref (--checkpoint C | --projections P) --out DIR", "write the projections file from a run's checkpoint, or the CSKV reference code's .ckpt pair (--format cskv-ref)", runExport},
		{"import", "--from FILE --out P.safetensors [--model M] [--rope-layout hf|meta]", "bring in factors from the CSKV reference code (.ckpt pair) or a plain safetensors file, checked against the model", runImport},
		{"compare", "[--model M --data T --eval-data E] [--bits 4,2] [flags]", "post-training quantisation of trained projections vs quantisation-aware training, per bit width", runCompare},
		{"memory", "[--model M | --shape llama2-7b] [--context 4096] [--densities ...] [--bits ...]", "cache bytes per token and compression ratios for densities × bits (the memory formula)", runMemory},
		{"bench", "[--shapes a,b] [--loss kv,kv+out] [--steps N] [--precision P] [--json]", "time one training step (forward, backward, Adam) at reference layer shapes", runBench},
		{"analyze", "[--model M --data T] --out DIR [flags]", "singular spectra of each layer's K and V caches and weights (CSV + PNG plots)", runAnalyze},
	}
}

// errUsage marks a command-line mistake: exit status 2.
var errUsage = errors.New("usage")

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		if len(args) > 1 {
			return run([]string{args[1], "-h"}, stdout, stderr)
		}
		usage(stdout)
		return 0
	}
	if os.Getenv("GOGC") == "" { // the peak-memory formula's collector (README)
		debug.SetGCPercent(train.GCPercent)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { // the first signal asks for a clean stop; a second one kills
		<-ctx.Done()
		stop()
	}()
	for _, c := range commands {
		if c.name == args[0] {
			err := c.run(ctx, newCLI(c.name, c.synopsis), args[1:])
			switch {
			case err == nil:
				return 0
			case errors.Is(err, flag.ErrHelp):
				return 0
			case errors.Is(err, context.Canceled):
				fmt.Fprintf(stderr, "cskv %s: interrupted: %v\n", c.name, err)
				return 130
			case errors.Is(err, errUsage):
				fmt.Fprintf(stderr, "cskv %s: %v\n", c.name, err)
				return 2
			default:
				fmt.Fprintf(stderr, "cskv %s: error: %v\n", c.name, err)
				return 1
			}
		}
	}
	fmt.Fprintf(stderr, "cskv: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "cskv: CSKV channel shrinking of the KV cache of Llama-family models")
	fmt.Fprintln(w, "\nUsage: cskv <command> [flags]\n\nCommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun `cskv <command> -h` for a command's flags and defaults.")
	fmt.Fprintln(w, "With no --model, commands use the embedded default: a small SYNTHETIC Llama built from a seed.")
}

// logFlags are the logging flags every command shares.
type logFlags struct {
	level  string
	format string
	quiet  bool
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&l.format, "log-format", "text", "log format: text or json")
	fs.BoolVar(&l.quiet, "quiet", false, "no progress bars and only warnings and errors in the log")
}

// logger builds the logrus logger (on stderr, so stdout stays clean).
func (l *logFlags) logger() (*logrus.Logger, error) {
	log := logrus.New()
	log.SetOutput(os.Stderr)
	lvl, err := logrus.ParseLevel(l.level)
	if err != nil {
		return nil, fmt.Errorf("%w: --log-level %q: want debug, info, warn or error", errUsage, l.level)
	}
	if l.quiet && lvl > logrus.WarnLevel {
		lvl = logrus.WarnLevel
	}
	log.SetLevel(lvl)
	switch l.format {
	case "text":
		log.SetFormatter(&logrus.TextFormatter{DisableColors: true, FullTimestamp: true})
	case "json":
		log.SetFormatter(&logrus.JSONFormatter{})
	default:
		return nil, fmt.Errorf("%w: --log-format %q: want text or json", errUsage, l.format)
	}
	return log, nil
}

// bar returns a progress bar on stderr, or nil when quiet.
func (l *logFlags) bar(total int, desc string) *progressbar.ProgressBar {
	if l.quiet || !term.IsTerminal(int(os.Stderr.Fd())) {
		return nil
	}
	return progressbar.NewOptions(total,
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionSetWidth(30),
	)
}

// newFlagSet returns a FlagSet that reports errors instead of exiting and
// prints its defaults on -h.
func newFlagSet(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("cskv "+name, flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: cskv %s %s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// cli is one command's flags: its flag set with the logging flags every
// command shares, and the optional --precision and --config.
type cli struct {
	*flag.FlagSet
	lf        logFlags
	precision *linalg.Precision // --precision, selected for the whole program by start; nil: none
	config    *string           // --config, applied by start under the command line; nil: none
}

// newCLI returns the flags of command name with the logging flags
// registered.
func newCLI(name, synopsis string) *cli {
	c := &cli{FlagSet: newFlagSet(name, synopsis)}
	c.lf.register(c.FlagSet)
	return c
}

// precisionFlag registers --precision with default def.
func (c *cli) precisionFlag(def linalg.Precision) {
	c.precision = &def
	c.Var(c.precision, "precision", precisionUsage)
}

// configFlag registers --config.
func (c *cli) configFlag() {
	c.config = c.String("config", "", "YAML file of flag values (keys: the flag names, e.g. k-density: 0.25); flags on the command line override it")
}

// start parses the command line (rejecting stray arguments) and the --config
// file under it, configures the logger and selects --precision.
func (c *cli) start(args []string) (*logrus.Logger, error) {
	if err := parse(c.FlagSet, args); err != nil {
		return nil, err
	}
	if c.config != nil {
		if err := applyConfigFile(c.FlagSet, *c.config); err != nil {
			return nil, err
		}
	}
	return c.ready()
}

// ready configures the logger and selects --precision, once the flags are
// parsed.
func (c *cli) ready() (*logrus.Logger, error) {
	log, err := c.lf.logger()
	if err != nil {
		return nil, err
	}
	if c.precision != nil {
		if err := linalg.SetPrecision(*c.precision); err != nil {
			return nil, fmt.Errorf("%w: --precision: %v", errUsage, err)
		}
	}
	return log, nil
}

// startRun is start for the commands that build a train.Config (train, init,
// capture, allocate, compare): the synthetic model's data defaults fill the
// flags left unset.
func (c *cli) startRun(args []string, cfg *train.Config) (*logrus.Logger, error) {
	log, err := c.start(args)
	if err != nil {
		return nil, err
	}
	syntheticDefaults(c.FlagSet, cfg.Model, &cfg.SeqLen, &cfg.CalibChunks)
	return log, nil
}

// parse parses flags and rejects stray arguments.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q (this command takes only flags; see -h)", errUsage, strings.Join(fs.Args(), " "))
	}
	return nil
}
