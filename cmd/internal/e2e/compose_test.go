package e2e

// The docker compose test cluster cannot run here (no Docker engine), so
// these tests check it by construction: they parse docker-compose.yml, the
// Dockerfile and .dockerignore, and load the mounted pgshard config with the
// project's own loader. They need no Postgres.

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/pgshard/pgshard/cmd/internal/config"
)

// composeConfigTarget is where the image and the compose services expect
// pgshard's config.
const composeConfigTarget = "/etc/pgshard/pgshard.yaml"

// composeRepoRoot is the directory holding go.mod, above this package.
func composeRepoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test's directory")
		}
		dir = parent
	}
}

// composeService is the part of a compose service the tests look at. Fields
// that have a short and a long syntax stay as yaml.Node values.
type composeService struct {
	Image       string    `yaml:"image"`
	Build       yaml.Node `yaml:"build"`
	Command     yaml.Node `yaml:"command"`
	Entrypoint  yaml.Node `yaml:"entrypoint"`
	Environment yaml.Node `yaml:"environment"`
	Healthcheck *struct {
		Test yaml.Node `yaml:"test"`
	} `yaml:"healthcheck"`
	Ports     []yaml.Node `yaml:"ports"`
	Volumes   []yaml.Node `yaml:"volumes"`
	DependsOn yaml.Node   `yaml:"depends_on"`
	Restart   string      `yaml:"restart"`
}

type composeFile struct {
	Version  *string                   `yaml:"version"`
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

func loadComposeFile(t *testing.T, root string) composeFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return f
}

// composeStrings reads a string, or a list of strings, node. A string
// command is split on spaces, which is enough for the files checked here.
func composeStrings(t *testing.T, n yaml.Node, what string) []string {
	t.Helper()
	switch n.Kind {
	case 0:
		return nil
	case yaml.ScalarNode:
		return strings.Fields(n.Value)
	case yaml.SequenceNode:
		var out []string
		if err := n.Decode(&out); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return out
	}
	t.Fatalf("%s: want a string or a list, got YAML kind %v", what, n.Kind)
	return nil
}

// composeEnv reads environment in its map or KEY=VALUE list form.
func composeEnv(t *testing.T, n yaml.Node, what string) map[string]string {
	t.Helper()
	env := map[string]string{}
	switch n.Kind {
	case 0:
	case yaml.MappingNode:
		if err := n.Decode(&env); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case yaml.SequenceNode:
		var list []string
		if err := n.Decode(&list); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		for _, kv := range list {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
	default:
		t.Fatalf("%s: want a map or a list", what)
	}
	return env
}

// composeDependsOn returns depends_on targets and their conditions (the
// list form means service_started).
func composeDependsOn(t *testing.T, n yaml.Node, what string) map[string]string {
	t.Helper()
	deps := map[string]string{}
	switch n.Kind {
	case 0:
	case yaml.SequenceNode:
		var list []string
		if err := n.Decode(&list); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		for _, s := range list {
			deps[s] = "service_started"
		}
	case yaml.MappingNode:
		var m map[string]struct {
			Condition string `yaml:"condition"`
		}
		if err := n.Decode(&m); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		for s, d := range m {
			c := d.Condition
			if c == "" {
				c = "service_started"
			}
			deps[s] = c
		}
	default:
		t.Fatalf("%s: want a list or a map", what)
	}
	return deps
}

type composeMount struct{ source, target string }

// composeMounts reads volumes in short ("src:dst[:mode]") or long form.
func composeMounts(t *testing.T, vols []yaml.Node, what string) []composeMount {
	t.Helper()
	var out []composeMount
	for _, n := range vols {
		switch n.Kind {
		case yaml.ScalarNode:
			parts := strings.Split(n.Value, ":")
			if len(parts) < 2 {
				out = append(out, composeMount{target: parts[0]})
				continue
			}
			out = append(out, composeMount{source: parts[0], target: parts[1]})
		case yaml.MappingNode:
			var m struct {
				Source string `yaml:"source"`
				Target string `yaml:"target"`
			}
			if err := n.Decode(&m); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			out = append(out, composeMount{m.Source, m.Target})
		default:
			t.Fatalf("%s: unexpected volume entry", what)
		}
	}
	return out
}

// isBindMount: a relative or absolute path, not a named volume.
func (m composeMount) isBindMount() bool {
	return strings.HasPrefix(m.source, ".") || strings.HasPrefix(m.source, "/")
}

// composePublishes reports whether ports publishes container port 6432 on
// host port 6432.
func composePublishes(t *testing.T, ports []yaml.Node, port string) bool {
	t.Helper()
	for _, n := range ports {
		switch n.Kind {
		case yaml.ScalarNode:
			parts := strings.Split(strings.TrimSuffix(n.Value, "/tcp"), ":")
			if len(parts) >= 2 && parts[len(parts)-1] == port && parts[len(parts)-2] == port {
				return true
			}
		case yaml.MappingNode:
			var m struct {
				Target    string `yaml:"target"`
				Published string `yaml:"published"`
			}
			if err := n.Decode(&m); err != nil {
				t.Fatal(err)
			}
			if m.Target == port && m.Published == port {
				return true
			}
		}
	}
	return false
}

// configFlag returns the value of --config in args.
func configFlag(args []string) string {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--config="); ok {
			return v
		}
		if a == "--config" && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

func TestComposeFile(t *testing.T) {
	root := composeRepoRoot(t)
	f := loadComposeFile(t, root)
	if f.Version != nil {
		t.Errorf("docker-compose.yml: drop the obsolete top-level version: key (compose spec)")
	}
	for _, name := range []string{"pg0", "pg1", "pg2", "pgshard", "shardctl"} {
		if _, ok := f.Services[name]; !ok {
			t.Fatalf("docker-compose.yml: no service %q", name)
		}
	}

	// Every bind-mounted file or directory is in the repo; every named
	// volume is declared; every depends_on target exists.
	for name, s := range f.Services {
		for _, m := range composeMounts(t, s.Volumes, name+".volumes") {
			switch {
			case m.isBindMount():
				if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(m.source))); err != nil {
					t.Errorf("%s mounts %s: %v", name, m.source, err)
				}
			case m.source != "":
				if _, ok := f.Volumes[m.source]; !ok {
					t.Errorf("%s uses volume %q, not declared under volumes:", name, m.source)
				}
			}
		}
		for dep := range composeDependsOn(t, s.DependsOn, name+".depends_on") {
			if _, ok := f.Services[dep]; !ok {
				t.Errorf("%s depends on %q, which is not a service", name, dep)
			}
		}
	}

	// The Postgres servers.
	pgEnv := map[string]map[string]string{}
	for _, name := range []string{"pg0", "pg1", "pg2"} {
		s := f.Services[name]
		if s.Image != "postgres:15" {
			t.Errorf("%s: image %q, want postgres:15", name, s.Image)
		}
		cmd := composeStrings(t, s.Command, name+".command")
		for _, want := range []string{"wal_level=logical", "max_replication_slots=20", "max_wal_senders=20", "max_prepared_transactions=100"} {
			if !slices.Contains(cmd, want) {
				t.Errorf("%s: command %q lacks -c %s", name, cmd, want)
			}
		}
		if s.Healthcheck == nil {
			t.Errorf("%s: no healthcheck", name)
		} else if hc := strings.Join(composeStrings(t, s.Healthcheck.Test, name+".healthcheck.test"), " "); !strings.Contains(hc, "pg_isready") {
			t.Errorf("%s: healthcheck %q does not use pg_isready", name, hc)
		}
		env := composeEnv(t, s.Environment, name+".environment")
		if env["POSTGRES_PASSWORD"] == "" {
			t.Errorf("%s: POSTGRES_PASSWORD is required by the postgres image", name)
		}
		pgEnv[name] = env
		var initdb bool
		for _, m := range composeMounts(t, s.Volumes, name+".volumes") {
			if m.target == "/var/lib/postgresql/data" && m.isBindMount() {
				t.Errorf("%s: data directory should be a named volume, not %s", name, m.source)
			}
			if m.target == "/docker-entrypoint-initdb.d" && m.isBindMount() {
				initdb = true
				checkComposeInitdb(t, filepath.Join(root, filepath.FromSlash(m.source)), env)
			}
		}
		if !initdb && env["POSTGRES_USER"] != "app" {
			t.Errorf("%s: no init script mounted and POSTGRES_USER is not app: who creates role app?", name)
		}
	}

	// pgshard: built from this repo's Dockerfile, on 6432, with its config.
	ps := f.Services["pgshard"]
	var build struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	}
	switch ps.Build.Kind {
	case yaml.ScalarNode:
		build.Context = ps.Build.Value
	case yaml.MappingNode:
		if err := ps.Build.Decode(&build); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatal("pgshard: no build:")
	}
	if path.Clean(build.Context) != "." || (build.Dockerfile != "" && build.Dockerfile != "Dockerfile") {
		t.Errorf("pgshard: build %+v, want context . with ./Dockerfile", build)
	}
	if !composePublishes(t, ps.Ports, "6432") {
		t.Errorf("pgshard: does not publish 6432:6432")
	}
	if ps.Restart == "" || ps.Restart == "no" {
		t.Errorf("pgshard: no restart policy")
	}
	if ps.Healthcheck == nil {
		t.Errorf("pgshard: no healthcheck")
	} else if hc := strings.Join(composeStrings(t, ps.Healthcheck.Test, "pgshard.healthcheck.test"), " "); !strings.Contains(hc, "6432") ||
		!(strings.Contains(hc, "psql") || strings.Contains(hc, "pg_isready")) {
		t.Errorf("pgshard: healthcheck %q should run psql or pg_isready against port 6432", hc)
	}
	deps := composeDependsOn(t, ps.DependsOn, "pgshard.depends_on")
	if deps["shardctl"] != "service_completed_successfully" {
		t.Errorf("pgshard: depends_on shardctl %q, want condition service_completed_successfully", deps["shardctl"])
	}
	if args := composeStrings(t, ps.Command, "pgshard.command"); len(args) > 0 && configFlag(args) != composeConfigTarget {
		t.Errorf("pgshard: command %q does not read %s", args, composeConfigTarget)
	}

	// shardctl: the same image, one shot, after pg0 and pg1 are healthy,
	// bootstrapping the map from the same config.
	sc := f.Services["shardctl"]
	if sc.Image == "" || sc.Image != ps.Image {
		t.Errorf("shardctl: image %q, want pgshard's image %q (built once)", sc.Image, ps.Image)
	}
	if ep := composeStrings(t, sc.Entrypoint, "shardctl.entrypoint"); len(ep) == 0 || path.Base(ep[0]) != "shardctl" {
		t.Errorf("shardctl: entrypoint %q, want shardctl", ep)
	}
	scArgs := composeStrings(t, sc.Command, "shardctl.command")
	if configFlag(scArgs) != composeConfigTarget || !slices.Contains(scArgs, "map") {
		t.Errorf("shardctl: command %q, want --config %s map", scArgs, composeConfigTarget)
	}
	scDeps := composeDependsOn(t, sc.DependsOn, "shardctl.depends_on")
	for _, pg := range []string{"pg0", "pg1"} {
		if scDeps[pg] != "service_healthy" {
			t.Errorf("shardctl: depends_on %s %q, want service_healthy", pg, scDeps[pg])
		}
	}
	if sc.Restart != "" && sc.Restart != "no" {
		t.Errorf("shardctl: restart %q on a one-shot service", sc.Restart)
	}

	// The config both mount parses with pgshard's own loader and points at
	// the compose Postgres services.
	var cfgSource string
	for _, svc := range []string{"pgshard", "shardctl"} {
		var src string
		for _, m := range composeMounts(t, f.Services[svc].Volumes, svc+".volumes") {
			if m.target == composeConfigTarget {
				src = m.source
			}
		}
		if src == "" {
			t.Fatalf("%s: nothing mounted at %s", svc, composeConfigTarget)
		}
		if cfgSource != "" && src != cfgSource {
			t.Errorf("pgshard mounts %s but shardctl mounts %s", cfgSource, src)
		}
		cfgSource = src
	}
	cfg, err := config.Load(filepath.Join(root, filepath.FromSlash(cfgSource)))
	if err != nil {
		t.Fatalf("mounted config: %v", err)
	}
	if _, err := cfg.Rules(); err != nil {
		t.Errorf("%s: sharding rules: %v", cfgSource, err)
	}
	host, port, _ := net.SplitHostPort(cfg.Listen)
	if port != "6432" || (host != "0.0.0.0" && host != "" && host != "::") {
		t.Errorf("%s: listen %q, want 0.0.0.0:6432 (a loopback address is unreachable through the published port)", cfgSource, cfg.Listen)
	}
	if len(cfg.Shards) != 2 {
		t.Fatalf("%s: %d shards, want s0 (pg0) and s1 (pg1); pg2 comes in later", cfgSource, len(cfg.Shards))
	}
	for i, s := range cfg.Shards {
		want := fmt.Sprintf("pg%d", i)
		u := composeDSN(t, s.DSN, fmt.Sprintf("shards[%d].dsn", i))
		if u.Hostname() != want {
			t.Errorf("shards[%d] (%s): dsn host %q, want %s", i, s.Name, u.Hostname(), want)
		}
		if u.Port() != "5432" || u.User.Username() != "app" || strings.TrimPrefix(u.Path, "/") != "app" {
			t.Errorf("shards[%d] (%s): dsn %s, want app@%s:5432/app", i, s.Name, s.DSN, want)
		}
		if pw, _ := u.User.Password(); !slices.ContainsFunc(cfg.Users, func(cu config.User) bool { return cu.Name == "app" && cu.Password == pw }) {
			t.Errorf("%s: no client login app with the shards' password", cfgSource)
		}
		if s.AdminDSN == "" {
			t.Errorf("shards[%d] (%s): no admin_dsn (rebalancing needs a superuser)", i, s.Name)
			continue
		}
		a := composeDSN(t, s.AdminDSN, fmt.Sprintf("shards[%d].admin_dsn", i))
		env := pgEnv[want]
		super := env["POSTGRES_USER"]
		if super == "" {
			super = "postgres"
		}
		apw, _ := a.User.Password()
		if a.Hostname() != want || a.User.Username() != super || apw != env["POSTGRES_PASSWORD"] {
			t.Errorf("shards[%d] (%s): admin_dsn %s, want %s with %s's POSTGRES_USER/POSTGRES_PASSWORD", i, s.Name, s.AdminDSN, want, want)
		}
	}
	if cfg.Catalog != "" {
		if h := composeDSN(t, cfg.Catalog, "catalog").Hostname(); h != "pg0" && h != "pg1" {
			t.Errorf("%s: catalog on %q, not a shard of the map", cfgSource, h)
		}
	}
}

// composeDSN parses a URL DSN.
func composeDSN(t *testing.T, dsn, what string) *url.URL {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("%s: %q is not a postgres:// URL (%v)", what, dsn, err)
	}
	return u
}

// checkComposeInitdb: the init scripts create login role app with password
// app and give it database app (created as POSTGRES_DB, or by the script).
func checkComposeInitdb(t *testing.T, dir string, env map[string]string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.sql"))
	if err != nil || len(files) == 0 {
		t.Errorf("%s: no .sql init script (%v)", dir, err)
		return
	}
	var all []byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
		all = append(all, '\n')
	}
	sql := strings.ToLower(string(all))
	if !regexp.MustCompile(`create (role|user) app\b[^;]*\blogin\b[^;]*password 'app'|create user app\b[^;]*password 'app'`).MatchString(sql) {
		t.Errorf("%s: no CREATE ROLE app LOGIN PASSWORD 'app'", dir)
	}
	owned := regexp.MustCompile(`alter database app owner to app\b|create database app\b[^;]*owner\s*=?\s*app\b`).MatchString(sql)
	if !owned {
		t.Errorf("%s: database app is not given to role app", dir)
	}
	if env["POSTGRES_DB"] == "app" && strings.Contains(sql, "create database app") {
		t.Errorf("%s: creates database app, which POSTGRES_DB=app already created", dir)
	}
}

// dockerInstr is one Dockerfile instruction, continuation lines joined.
type dockerInstr struct {
	cmd  string // upper case
	args string
	line int
}

func parseDockerfile(t *testing.T, b []byte) []dockerInstr {
	t.Helper()
	var out []dockerInstr
	var cur strings.Builder
	start := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue // comments (and parser directives) and blank lines
		}
		if cur.Len() == 0 {
			start = n
		}
		if s, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(s)
			cur.WriteByte(' ')
			continue
		}
		cur.WriteString(line)
		text := strings.TrimSpace(cur.String())
		cur.Reset()
		cmd, args, _ := strings.Cut(text, " ")
		out = append(out, dockerInstr{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur.Len() > 0 {
		t.Fatal("Dockerfile: ends in a continuation line")
	}
	return out
}

type dockerStage struct {
	image, name string
	instrs      []dockerInstr
}

func (s dockerStage) all(cmd string) []dockerInstr {
	var out []dockerInstr
	for _, in := range s.instrs {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

func TestDockerfile(t *testing.T) {
	root := composeRepoRoot(t)
	b, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var stages []dockerStage
	for _, in := range parseDockerfile(t, b) {
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			f = slices.DeleteFunc(f, func(s string) bool { return strings.HasPrefix(s, "--platform") })
			st := dockerStage{image: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "as") {
				st.name = f[2]
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				t.Fatalf("Dockerfile:%d: %s before the first FROM", in.line, in.cmd)
			}
			continue
		}
		stages[len(stages)-1].instrs = append(stages[len(stages)-1].instrs, in)
	}
	if len(stages) < 2 {
		t.Fatalf("Dockerfile: %d FROM stages, want a build and a runtime stage", len(stages))
	}

	// The build stage: a golang image of go.mod's Go version, cgo on,
	// modules downloaded in their own layer, both binaries built.
	bs := stages[0]
	if !strings.HasPrefix(bs.image, "golang:") {
		t.Fatalf("Dockerfile: build stage FROM %s, want a golang image", bs.image)
	}
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod); m != nil {
		if tag := strings.TrimPrefix(bs.image, "golang:"); !strings.HasPrefix(tag, string(m[1])) {
			t.Errorf("Dockerfile: build image %s, go.mod wants Go %s (the image sets GOTOOLCHAIN=local)", bs.image, m[1])
		}
	}
	var cgo, modDownload, copyAll bool
	built := map[string]bool{}
	for _, in := range bs.instrs {
		if (in.cmd == "ENV" || in.cmd == "RUN" || in.cmd == "ARG") && regexp.MustCompile(`\bCGO_ENABLED[= ]1\b`).MatchString(in.args) {
			cgo = true
		}
		if in.cmd == "RUN" && regexp.MustCompile(`\bCGO_ENABLED=0\b`).MatchString(in.args) {
			t.Errorf("Dockerfile:%d: CGO_ENABLED=0 (pg_query_go needs cgo)", in.line)
		}
		if in.cmd == "ENV" && regexp.MustCompile(`\bCGO_ENABLED[= ]0\b`).MatchString(in.args) {
			t.Errorf("Dockerfile:%d: CGO_ENABLED=0 (pg_query_go needs cgo)", in.line)
		}
		if in.cmd == "COPY" {
			f := strings.Fields(in.args)
			if slices.Contains(f, ".") && len(f) >= 2 && f[len(f)-2] == "." {
				copyAll = true
			}
		}
		if in.cmd == "RUN" && strings.Contains(in.args, "go mod download") {
			if copyAll {
				t.Errorf("Dockerfile:%d: go mod download after COPY . . (no cached module layer)", in.line)
			}
			modDownload = true
		}
		if in.cmd == "RUN" {
			for _, cmdline := range regexp.MustCompile(`go build[^&;|]*`).FindAllString(in.args, -1) {
				for _, pkg := range []string{"./cmd/pgshard", "./cmd/shardctl"} {
					if regexp.MustCompile(regexp.QuoteMeta(pkg) + `(\s|$)`).MatchString(cmdline) {
						built[pkg] = true
					}
				}
			}
		}
	}
	if !cgo {
		t.Error("Dockerfile: build stage does not set CGO_ENABLED=1 (pg_query_go needs cgo)")
	}
	if !modDownload {
		t.Error("Dockerfile: no `go mod download` layer")
	}
	for _, pkg := range []string{"./cmd/pgshard", "./cmd/shardctl"} {
		if !built[pkg] {
			t.Errorf("Dockerfile: build stage does not go build %s", pkg)
		}
	}

	// The runtime stage.
	rs := stages[len(stages)-1]
	if strings.HasPrefix(rs.image, "golang") || rs.image == bs.name {
		t.Errorf("Dockerfile: final stage FROM %s, want a slim runtime image", rs.image)
	}
	users := rs.all("USER")
	if len(users) == 0 {
		t.Error("Dockerfile: final stage has no USER (runs as root)")
	} else if u, _, _ := strings.Cut(users[len(users)-1].args, ":"); u == "root" || u == "0" {
		t.Errorf("Dockerfile: final stage runs as %q", users[len(users)-1].args)
	}
	var exposed bool
	for _, in := range rs.all("EXPOSE") {
		for _, p := range strings.Fields(in.args) {
			if strings.TrimSuffix(p, "/tcp") == "6432" {
				exposed = true
			}
		}
	}
	if !exposed {
		t.Error("Dockerfile: final stage does not EXPOSE 6432")
	}
	var copied []string
	for _, in := range rs.all("COPY") {
		if strings.Contains(in.args, "--from=") {
			copied = append(copied, strings.Fields(in.args)...)
		}
	}
	for _, bin := range []string{"pgshard", "shardctl"} {
		if !slices.ContainsFunc(copied, func(s string) bool { return path.Base(s) == bin }) {
			t.Errorf("Dockerfile: final stage does not copy %s from the build stage", bin)
		}
	}
	if ep := rs.all("ENTRYPOINT"); len(ep) == 0 || !strings.Contains(ep[len(ep)-1].args, `"/usr/local/bin/pgshard"`) {
		t.Error(`Dockerfile: ENTRYPOINT is not ["/usr/local/bin/pgshard"]`)
	}
	if c := rs.all("CMD"); len(c) == 0 || !strings.Contains(c[len(c)-1].args, `"`+composeConfigTarget+`"`) {
		t.Errorf("Dockerfile: CMD does not pass --config %s", composeConfigTarget)
	}
	var psql bool
	for _, in := range rs.all("RUN") {
		if strings.Contains(in.args, "postgresql-client") {
			psql = true
		}
	}
	if !psql {
		t.Error("Dockerfile: final stage lacks postgresql-client (psql/pg_isready for healthchecks)")
	}
	t.Run("dockerignore", func(t *testing.T) { checkDockerignore(t, root) })

	// Files the Dockerfile COPYs from the context exist and are not
	// excluded by .dockerignore.
	ignore := loadDockerignore(t, root)
	for _, st := range stages {
		for _, in := range st.all("COPY") {
			if strings.Contains(in.args, "--from=") {
				continue
			}
			f := slices.DeleteFunc(strings.Fields(in.args), func(s string) bool { return strings.HasPrefix(s, "--") })
			for _, src := range f[:len(f)-1] {
				if src == "." {
					continue
				}
				if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(src))); err != nil {
					t.Errorf("Dockerfile:%d: COPY %s: %v", in.line, src, err)
				}
				if p := dockerignored(ignore, src); p != "" {
					t.Errorf("Dockerfile:%d: COPY %s, but .dockerignore excludes it (%s)", in.line, src, p)
				}
			}
		}
	}
}

func loadDockerignore(t *testing.T, root string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var pats []string
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		pats = append(pats, strings.TrimPrefix(path.Clean(l), "/"))
	}
	return pats
}

// dockerignored returns the pattern excluding p (or one of its parent
// directories), if any. It does not handle "!" exceptions, which the file
// must not need.
func dockerignored(pats []string, p string) string {
	p = path.Clean(p)
	for _, pat := range pats {
		for q := p; q != "." && q != "/"; q = path.Dir(q) {
			if ok, _ := path.Match(pat, q); ok {
				return pat
			}
			if rest, ok := strings.CutPrefix(pat, "**/"); ok {
				if ok, _ := path.Match(rest, path.Base(q)); ok {
					return pat
				}
			}
		}
	}
	return ""
}

// checkDockerignore: the context leaves out what the image does not need
// and keeps what it does.
func checkDockerignore(t *testing.T, root string) {
	pats := loadDockerignore(t, root)
	for _, want := range []string{".git", "bin", ".pgshard", "node_modules"} {
		if !slices.Contains(pats, want) {
			t.Errorf(".dockerignore: does not exclude %s", want)
		}
	}
	for _, p := range pats {
		if strings.HasPrefix(p, "!") {
			t.Errorf(".dockerignore: exception %q (the test's matcher does not handle them)", p)
		}
	}
	// What the build needs stays in the context.
	for _, need := range []string{"go.mod", "go.sum", "cmd/pgshard/main.go", "cmd/shardctl/main.go", "router", "wire", "shardmap", "deploy/pgshard.yaml"} {
		if p := dockerignored(pats, need); p != "" {
			t.Errorf(".dockerignore: %q excludes %s, which the image build needs", p, need)
		}
	}
}
