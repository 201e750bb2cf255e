package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"text/template"
	"time"
	"unicode/utf8"

	"github.com/docker/go-units"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// shortIDLen is how many characters of an ID docker shows.
const shortIDLen = 12

// truncID shortens an ID (with or without "sha256:") to docker's 12 characters.
func truncID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > shortIDLen {
		return id[:shortIDLen]
	}
	return id
}

// ellipsis cuts s to max runes, the last one an ellipsis, as docker's
// formatter does for COMMAND.
func ellipsis(s string, max int) string {
	if utf8.RuneCountInString(s) <= max {
		return s
	}
	r := []rune(s)
	return string(r[:max-1]) + "…"
}

// displayCommand is docker's COMMAND column: the command line quoted, cut to
// 20 characters unless --no-trunc.
func displayCommand(argv []string, trunc bool) string {
	quoted := make([]string, len(argv))
	for i, a := range argv {
		// Arguments with blanks are shown in single quotes, as docker does,
		// so that "sh -c 'echo hi'" reads as it was typed.
		if a == "" || strings.ContainsAny(a, " \t\n") {
			a = "'" + a + "'"
		}
		quoted[i] = a
	}
	cmd := strings.Join(quoted, " ")
	if trunc {
		cmd = ellipsis(cmd, 20)
	}
	return strconv.Quote(cmd)
}

// since is docker's "N units" for the time since t.
func since(now, t time.Time) string { return units.HumanDuration(now.Sub(t)) }

// statusString is docker's STATUS column.
func statusString(st *runtimeapi.ContainerStatus, now time.Time) string {
	switch st.GetState() {
	case runtimeapi.ContainerState_CONTAINER_CREATED:
		return "Created"
	case runtimeapi.ContainerState_CONTAINER_RUNNING:
		return "Up " + since(now, time.Unix(0, st.GetStartedAt()))
	case runtimeapi.ContainerState_CONTAINER_EXITED:
		if st.GetFinishedAt() == 0 {
			return fmt.Sprintf("Exited (%d)", st.GetExitCode())
		}
		return fmt.Sprintf("Exited (%d) %s ago", st.GetExitCode(), since(now, time.Unix(0, st.GetFinishedAt())))
	}
	return "Unknown"
}

// stateString is docker's .State: created, running, exited.
func stateString(s runtimeapi.ContainerState) string {
	switch s {
	case runtimeapi.ContainerState_CONTAINER_CREATED:
		return "created"
	case runtimeapi.ContainerState_CONTAINER_RUNNING:
		return "running"
	case runtimeapi.ContainerState_CONTAINER_EXITED:
		return "exited"
	}
	return "unknown"
}

// humanSize is docker's SIZE column: decimal units, three significant digits.
func humanSize(n uint64) string { return units.HumanSizeWithPrecision(float64(n), 3) }

// shortImageName drops the defaults docker hides: "docker.io/library/busybox"
// is shown as "busybox".
func shortImageName(ref string) string {
	ref = strings.TrimPrefix(ref, "docker.io/")
	ref = strings.TrimPrefix(ref, "library/")
	return ref
}

// splitRepoTag splits "host:5000/repo:tag" into repository and tag.
func splitRepoTag(ref string) (string, string) {
	slash := strings.LastIndex(ref, "/")
	colon := strings.LastIndex(ref, ":")
	if colon > slash {
		return ref[:colon], ref[colon+1:]
	}
	return ref, "<none>"
}

// templateFuncs are the functions docker's --format offers.
var templateFuncs = template.FuncMap{
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
	"join":  strings.Join,
	"split": strings.Split,
	"lower": strings.ToLower,
	"upper": strings.ToUpper,
	"title": func(s string) string {
		if s == "" {
			return s
		}
		return strings.ToUpper(s[:1]) + s[1:]
	},
	"truncate": func(s string, n int) string {
		if utf8.RuneCountInString(s) <= n {
			return s
		}
		return string([]rune(s)[:n])
	},
	"pad": func(s string, l, r int) string { return strings.Repeat(" ", l) + s + strings.Repeat(" ", r) },
}

// table writes rows through a docker-style format: "table ..." prints a
// header and aligns columns, anything else is a Go template printed per row,
// and "json" prints one JSON object per row.
type table struct {
	format  string
	headers map[string]string // field name → column header
}

func (t table) write(out io.Writer, rows []any) error {
	format := t.format
	if format == "json" {
		format = "{{json .}}"
	}
	isTable := strings.HasPrefix(format, "table")
	if isTable {
		format = strings.TrimSpace(strings.TrimPrefix(format, "table"))
	}
	// Docker accepts literal "\t" and "\n" in --format.
	format = strings.NewReplacer(`\t`, "\t", `\n`, "\n").Replace(format)
	tmpl, err := template.New("format").Funcs(templateFuncs).Parse(format)
	if err != nil {
		return invalid("template parsing error: %v", err)
	}
	var w io.Writer = out
	var tw *tabwriter.Writer
	if isTable {
		tw = tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)
		w = tw
		hdr, err := template.New("header").Funcs(templateFuncs).Parse(format)
		if err != nil {
			return invalid("template parsing error: %v", err)
		}
		var b bytes.Buffer
		if err := hdr.Execute(&b, headerData(t.headers)); err != nil {
			return invalid("template: %v", err)
		}
		fmt.Fprintln(w, b.String())
	}
	for _, r := range rows {
		var b bytes.Buffer
		if err := tmpl.Execute(&b, r); err != nil {
			return invalid("template: %v", err)
		}
		fmt.Fprintln(w, b.String())
	}
	if tw != nil {
		return tw.Flush()
	}
	return nil
}

// headerData answers every {{.Field}} of a table format with its header,
// and {{.Label "x"}} with the label's name, as docker's header context does.
type headerData map[string]string

func (h headerData) Label(name string) string { return strings.ToUpper(name) }

// psRow is one container as `berth ps --format` sees it; the field names
// are docker's.
type psRow struct {
	ID         string
	Image      string
	Command    string
	CreatedAt  string
	RunningFor string
	Ports      string
	State      string
	Status     string
	Size       string
	Names      string
	Labels     string
	Mounts     string
	Networks   string

	labels map[string]string
}

// Label returns one label's value: {{.Label "io.berth.name"}}.
func (r psRow) Label(name string) string { return r.labels[name] }

var psHeaders = map[string]string{
	"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
	"RunningFor": "CREATED", "Ports": "PORTS", "State": "STATE", "Status": "STATUS", "Size": "SIZE",
	"Names": "NAMES", "Labels": "LABELS", "Mounts": "MOUNTS", "Networks": "NETWORKS",
}

const psDefaultFormat = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"

// imageRow is one image line of `berth images`.
type imageRow struct {
	ID           string
	Repository   string
	Tag          string
	Digest       string
	CreatedSince string
	CreatedAt    string
	Size         string
}

var imageHeaders = map[string]string{
	"ID": "IMAGE ID", "Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST",
	"CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE",
}

const imagesDefaultFormat = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"

func formatLabels(l map[string]string) string {
	var out []string
	for _, k := range sortedKeys(l) {
		out = append(out, k+"="+l[k])
	}
	return strings.Join(out, ",")
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
