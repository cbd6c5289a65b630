package tests

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/cskv/cskv/internal/testassets"
)

// k8sObject is the part of a Kubernetes object the deployment test reads.
type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec struct {
		CompletionMode string `yaml:"completionMode"`
		Completions    *int   `yaml:"completions"`
		Parallelism    *int   `yaml:"parallelism"`
		Template       struct {
			Spec struct {
				RestartPolicy string `yaml:"restartPolicy"`
				Containers    []struct {
					Command      []string `yaml:"command"`
					VolumeMounts []struct {
						Name      string `yaml:"name"`
						MountPath string `yaml:"mountPath"`
					} `yaml:"volumeMounts"`
				} `yaml:"containers"`
				Volumes []struct {
					Name                  string `yaml:"name"`
					PersistentVolumeClaim *struct {
						ClaimName string `yaml:"claimName"`
					} `yaml:"persistentVolumeClaim"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

// flagValue is the value after flag in a command line ("" if absent).
func flagValue(cmd []string, flag string) string {
	if i := slices.Index(cmd, flag); i >= 0 && i+1 < len(cmd) {
		return cmd[i+1]
	}
	return ""
}

// The Kubernetes manifest: a capture Job, an Indexed Job with one
// completion per shard, a merge Job, all mounting the one shared claim at
// the same path, reading and writing the same run directory there, with the
// commands the README shows.
func TestDeployKubernetes(t *testing.T) {
	raw, err := os.ReadFile("../deploy/kubernetes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	jobs := map[string]k8sObject{}
	var claim string
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	for {
		var o k8sObject
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("deploy/kubernetes.yaml: %v", err)
		}
		switch o.Kind {
		case "PersistentVolumeClaim":
			claim = o.Metadata.Name
		case "Job":
			jobs[o.Metadata.Labels["cskv-stage"]] = o
		default:
			t.Errorf("unexpected kind %q", o.Kind)
		}
	}
	if claim == "" || len(jobs) != 3 {
		t.Fatalf("claim %q, jobs by stage %v: want a claim and capture, train, merge Jobs", claim, len(jobs))
	}
	mount := ""
	cmds := map[string][]string{}
	for stage, j := range jobs {
		ps := j.Spec.Template.Spec
		if len(ps.Containers) != 1 || len(ps.Volumes) != 1 || ps.Volumes[0].PersistentVolumeClaim == nil ||
			ps.Volumes[0].PersistentVolumeClaim.ClaimName != claim {
			t.Fatalf("job %s: want one container and the one volume of claim %s", j.Metadata.Name, claim)
		}
		c := ps.Containers[0]
		if len(c.VolumeMounts) != 1 || c.VolumeMounts[0].Name != ps.Volumes[0].Name {
			t.Fatalf("job %s: the shared volume is not mounted", j.Metadata.Name)
		}
		if mount == "" {
			mount = c.VolumeMounts[0].MountPath
		}
		if c.VolumeMounts[0].MountPath != mount {
			t.Errorf("job %s mounts the shared volume at %s, another job at %s", j.Metadata.Name, c.VolumeMounts[0].MountPath, mount)
		}
		if line := strings.Join(c.Command, " "); !strings.Contains(string(readme), line) {
			t.Errorf("job %s: command %q is not in the README", j.Metadata.Name, line)
		}
		cmds[stage] = c.Command
	}
	capture, shards, merge := cmds["capture"], jobs["train"], cmds["merge"]
	run := flagValue(capture, "--out")
	if !strings.HasPrefix(run, mount+"/") || flagValue(cmds["train"], "--from") != run || len(merge) < 3 || merge[2] != run {
		t.Errorf("run directory: capture --out %q, train --from %q, merge %v: want one directory under %s", run, flagValue(cmds["train"], "--from"), merge, mount)
	}
	if slices.Contains(cmds["train"], "--shard") {
		t.Error("the shard Job names --shard: its pods take JOB_COMPLETION_INDEX")
	}
	n := flagValue(capture, "--shards")
	if shards.Spec.CompletionMode != "Indexed" || shards.Spec.Completions == nil || n == "" ||
		strconv.Itoa(*shards.Spec.Completions) != n || shards.Spec.Template.Spec.RestartPolicy != "Never" {
		t.Errorf("shard Job: completionMode %q, completions %v, restartPolicy %q; want Indexed, --shards %s, Never",
			shards.Spec.CompletionMode, shards.Spec.Completions, shards.Spec.Template.Spec.RestartPolicy, n)
	}
}

// fakeSbatch stands in for Slurm's sbatch: it logs its arguments, runs the
// --wrap command at once (each index of an --array with
// SLURM_ARRAY_TASK_ID), and prints a job id as --parsable does.
const fakeSbatch = `#!/usr/bin/env bash
set -e
n=$(( $(cat "$SBATCH_DIR/n" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$SBATCH_DIR/n"
printf '%s\n' "$*" >> "$SBATCH_DIR/log"
array= wrap=
while [ $# -gt 0 ]; do
	case "$1" in
	--array=*) array=${1#--array=} ;;
	--wrap) wrap=$2; shift ;;
	esac
	shift
done
if [ -n "$array" ]; then
	for i in $(seq "${array%-*}" "${array#*-}"); do SLURM_ARRAY_TASK_ID=$i bash -c "$wrap" >&2; done
else
	bash -c "$wrap" >&2
fi
echo "$n;cluster"
`

// The Slurm script passes bash -n and, run against a stand-in sbatch on
// stories260K, submits capture, an array of SHARDS tasks after it and the
// merge after the array, which together write the projections.
func TestDeploySlurm(t *testing.T) {
	script, err := filepath.Abs("../deploy/slurm.sh")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("bash", "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("bash -n deploy/slurm.sh: %v: %s", err, out)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "sbatch"), []byte(fakeSbatch), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", script, "--quiet", "--seq-len", "64", "--calib-chunks", "8", "--holdout", "2", "--steps", "5", "--batch", "4")
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "SBATCH_DIR="+dir, "CSKV="+cskvBin, "SHARDS=3",
		"MODEL="+testassets.Path(t, "models/stories260K.gguf"), "DATA="+testassets.Path(t, "data/tinystories_calib.txt"),
		"SHARED="+dir, "JOB_COMPLETION_INDEX=", "SLURM_ARRAY_TASK_ID=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("deploy/slurm.sh: %v: %s", err, out)
	}
	log, err := os.ReadFile(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	calls := strings.Split(strings.TrimSpace(string(log)), "\n")
	if len(calls) != 3 || !strings.Contains(calls[0], " capture ") ||
		!strings.Contains(calls[1], "--dependency=afterok:1 --array=0-2") || !strings.Contains(calls[1], " train --from ") ||
		!strings.Contains(calls[2], "--dependency=afterok:2") || !strings.Contains(calls[2], " merge ") {
		t.Fatalf("sbatch calls:\n%s", log)
	}
	if _, err := os.Stat(filepath.Join(dir, "run", "projections.safetensors")); err != nil {
		t.Fatalf("no merged projections: %v", err)
	}
}
