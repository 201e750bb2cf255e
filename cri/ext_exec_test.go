package cri

import (
	"context"
	"errors"
	"reflect"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/berth-dev/berth/errdefs"
)

func TestResolveExecUser(t *testing.T) {
	root := testRootfs(t)
	for user, want := range map[string]specs.User{
		"user":         {UID: 1000, GID: 1000, AdditionalGids: []uint32{10, 29}},
		"nobody:audio": {UID: 65534, GID: 29},
		"1000:65534":   {UID: 1000, GID: 65534, AdditionalGids: []uint32{10, 29}},
		"4242":         {UID: 4242},
		"4242:7":       {UID: 4242, GID: 7},
	} {
		got, err := resolveExecUser(root, user)
		if err != nil {
			t.Errorf("%s: %v", user, err)
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %+v, want %+v", user, got, want)
		}
	}
	for user, msg := range map[string]string{
		"ghost":       "unable to find user ghost: no matching entries in passwd file",
		"user:ghosts": "unable to find group ghosts: no matching entries in group file",
		":10":         `user ":10" has no user part: invalid argument`,
	} {
		_, err := resolveExecUser(root, user)
		if !errors.Is(err, errdefs.ErrInvalidArgument) || err.Error() != msg {
			t.Errorf("%s: got %v, want InvalidArgument %q", user, err, msg)
		}
	}
}

func TestMergeEnv(t *testing.T) {
	got := mergeEnv([]string{"PATH=/bin", "A=1", "B=2"}, []string{"B=3", "C=", "A=x=y"})
	want := []string{"PATH=/bin", "A=x=y", "B=3", "C="}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestParseExtExec(t *testing.T) {
	mk := func(m map[string]any) *structpb.Struct {
		s, err := structpb.NewStruct(m)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	r, err := parseExtExec(mk(map[string]any{"containerId": "c", "cmd": []any{"ls", "-l"}, "env": []any{"A=1"}, "user": "u:g", "workdir": "/w", "tty": true, "stdin": true, "detach": true}))
	if err != nil {
		t.Fatal(err)
	}
	want := extExecRequest{containerID: "c", cmd: []string{"ls", "-l"}, env: []string{"A=1"}, user: "u:g", workdir: "/w", tty: true, stdin: true, detach: true}
	if !reflect.DeepEqual(r, want) {
		t.Errorf("got %+v, want %+v", r, want)
	}
	for name, m := range map[string]map[string]any{
		"no cmd":           {"containerId": "c"},
		"cmd not a list":   {"containerId": "c", "cmd": "ls"},
		"cmd with number":  {"containerId": "c", "cmd": []any{"ls", 1}},
		"env without =":    {"containerId": "c", "cmd": []any{"ls"}, "env": []any{"A"}},
		"env empty key":    {"containerId": "c", "cmd": []any{"ls"}, "env": []any{"=1"}},
		"relative workdir": {"containerId": "c", "cmd": []any{"ls"}, "workdir": "tmp"},
	} {
		if _, err := parseExtExec(mk(m)); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: got %v, want InvalidArgument", name, err)
		}
	}
}

func TestExecTokens(t *testing.T) {
	x := &Extensions{execs: execGrants{byToken: map[string]execGrant{}}}
	proc := &specs.Process{Args: []string{"id"}}
	token, err := x.execs.add(execGrant{containerID: "c1", process: proc})
	if err != nil {
		t.Fatal(err)
	}
	other, err := x.execs.add(execGrant{containerID: "c1", process: proc})
	if err != nil {
		t.Fatal(err)
	}
	if len(token) != 64 || token == other {
		t.Fatalf("tokens %q and %q: want distinct 256-bit hex", token, other)
	}
	g, ok := x.execs.take(token)
	if !ok || g.containerID != "c1" || g.process != proc {
		t.Fatalf("take: %+v %v", g, ok)
	}
	if _, ok := x.execs.take(token); ok {
		t.Fatal("a token was taken twice")
	}

	// Through the stream runtime: an unknown token, a token for another
	// container, and a used token are refused before anything runs (the
	// Service is nil: reaching the runtime would panic).
	rt := extStreamRuntime{x: x}
	// In order: the mismatch uses the token up.
	for _, tc := range []struct{ name, id, token string }{
		{"unknown", "c1", "00"},
		{"other container", "c2", other},
		{"used", "c1", other},
	} {
		err := rt.Exec(context.Background(), tc.id, []string{execTokenArg0, tc.token}, nil, nil, nil, false, nil)
		if !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: got %v, want InvalidArgument", tc.name, err)
		}
	}
	if err := rt.Exec(context.Background(), "c1", []string{execTokenArg0}, nil, nil, nil, false, nil); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("token command without a token: %v", err)
	}
}
