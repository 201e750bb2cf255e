package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/errdefs"
)

func TestDefaultTOMLMatchesDefault(t *testing.T) {
	var got Config
	if err := Parse([]byte(DefaultTOML()), &got); err != nil {
		t.Fatalf("default config does not parse: %v", err)
	}
	if want := Default(); !reflect.DeepEqual(got, want) {
		t.Fatalf("printed default differs from built-in default:\n got %+v\nwant %+v", got, want)
	}
}

func TestUnknownKeyNamed(t *testing.T) {
	cfg := Default()
	err := Parse([]byte("[cni]\nconf_dirr = \"/x\"\n"), &cfg)
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "cni.conf_dirr") {
		t.Fatalf("want an invalid-argument error naming cni.conf_dirr, got %v", err)
	}
}

func TestLoadOverridesDefaults(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.toml")
	data := "root = \"/srv/berth\"\n[registry]\npull_progress_timeout = \"30s\"\n[runtime.handlers.runc]\npath = \"/usr/sbin/runc\"\n"
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path, false)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Root != "/srv/berth" || cfg.Registry.PullProgressTimeout.Duration != 30*time.Second {
		t.Fatalf("overrides not applied: %+v", cfg)
	}
	if cfg.State != "/run/berth" {
		t.Fatalf("untouched key lost its default: %q", cfg.State)
	}
	if cfg.Runtime.Handlers["runc"].Path != "/usr/sbin/runc" {
		t.Fatalf("handler not loaded: %+v", cfg.Runtime.Handlers)
	}
}

func TestLoadMissing(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.toml")
	if _, err := Load(missing, true); err != nil {
		t.Fatalf("missing default file must be fine: %v", err)
	}
	if _, err := Load(missing, false); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing explicit file must be an error, got %v", err)
	}
}

func TestValidateRejects(t *testing.T) {
	for name, data := range map[string]string{
		"relative root":   "root = \"var/lib\"\n",
		"bad duration":    "[registry]\npull_progress_timeout = \"soon\"\n",
		"zero timeout":    "[registry]\npull_progress_timeout = \"0s\"\n",
		"handler no path": "[runtime.handlers.x]\nargs = []\n",
	} {
		cfg := Default()
		if err := Parse([]byte(data), &cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
