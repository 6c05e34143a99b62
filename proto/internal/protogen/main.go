// Command protogen regenerates the Go code next to every .proto file under
// proto/ (the engine's) and sdk/proto/ (the plugin protocol, in the sdk
// module) without a system protoc. Each directory is its own import root.
//
// It compiles the .proto sources with github.com/bufbuild/protocompile,
// resolving imports first from proto/ and then from the descriptors that
// go-control-plane and google.golang.org/protobuf compile into their Go
// packages (so envoy's discovery.proto needs no source checkout), and runs the
// pinned code generators from go.mod's tool directives (protoc-gen-go,
// protoc-gen-go-grpc) as protoc plugins. Output paths are source-relative.
//
// Usage (from the module root): go run ./proto/internal/protogen [-check]
//
// With -check it writes nothing and exits 1 when a generated file differs from
// what is committed.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/pluginpb"

	// Registers envoy/service/discovery/v3/discovery.proto and its imports.
	_ "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

// roots are the directories holding .proto files, each its own import root.
var roots = []string{"proto", "sdk/proto"}

func main() {
	check := flag.Bool("check", false, "do not write; exit 1 if generated code is stale")
	flag.Parse()
	if err := run(*check); err != nil {
		fmt.Fprintln(os.Stderr, "protogen:", err)
		os.Exit(1)
	}
}

func run(check bool) error {
	var stale []string
	for _, root := range roots {
		s, err := generate(root, check)
		if err != nil {
			return fmt.Errorf("%s: %w", root, err)
		}
		stale = append(stale, s...)
	}
	if len(stale) > 0 {
		return fmt.Errorf("generated code is stale, run `make proto`: %s", strings.Join(stale, ", "))
	}
	return nil
}

// generate runs the generators over every .proto file under root and writes
// their output next to the sources, or with check returns the paths whose
// committed content differs.
func generate(root string, check bool) ([]string, error) {
	var sources []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(path, ".proto") {
			rel, _ := filepath.Rel(root, path)
			sources = append(sources, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("find .proto files: %w", err)
	}
	sort.Strings(sources)

	compiler := protocompile.Compiler{
		Resolver: protocompile.CompositeResolver{
			&protocompile.SourceResolver{ImportPaths: []string{root}},
			protocompile.ResolverFunc(func(path string) (protocompile.SearchResult, error) {
				fd, err := protoregistry.GlobalFiles.FindFileByPath(path)
				if err != nil {
					return protocompile.SearchResult{}, err
				}
				return protocompile.SearchResult{Desc: fd}, nil
			}),
		},
		SourceInfoMode: protocompile.SourceInfoStandard,
	}
	files, err := compiler.Compile(context.Background(), sources...)
	if err != nil {
		return nil, fmt.Errorf("compile: %w", err)
	}

	// Every file the generators need, dependencies first.
	var all []*descriptorpb.FileDescriptorProto
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := 0; i < imports.Len(); i++ {
			add(imports.Get(i).FileDescriptor)
		}
		all = append(all, protodesc.ToFileDescriptorProto(fd))
	}
	for _, f := range files {
		add(f)
	}

	req := &pluginpb.CodeGeneratorRequest{
		FileToGenerate: sources,
		Parameter:      proto.String("paths=source_relative"),
		ProtoFile:      all,
	}
	var stale []string
	for _, gen := range []string{"protoc-gen-go", "protoc-gen-go-grpc"} {
		out, err := runPlugin(gen, req)
		if err != nil {
			return nil, err
		}
		for _, f := range out {
			path := filepath.Join(root, f.GetName())
			content := []byte(f.GetContent())
			if check {
				old, _ := os.ReadFile(path)
				if !bytes.Equal(old, content) {
					stale = append(stale, path)
				}
				continue
			}
			if err := os.WriteFile(path, content, 0o644); err != nil {
				return nil, fmt.Errorf("write %s: %w", path, err)
			}
		}
	}
	return stale, nil
}

// runPlugin runs one pinned generator through `go tool` and returns its files.
func runPlugin(name string, req *pluginpb.CodeGeneratorRequest) ([]*pluginpb.CodeGeneratorResponse_File, error) {
	in, err := proto.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode request for %s: %w", name, err)
	}
	cmd := exec.Command("go", "tool", name)
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("run %s: %w: %s", name, err, stderr.String())
	}
	var resp pluginpb.CodeGeneratorResponse
	if err := proto.Unmarshal(stdout.Bytes(), &resp); err != nil {
		return nil, fmt.Errorf("decode %s output: %w", name, err)
	}
	if resp.Error != nil {
		return nil, errors.New(name + ": " + resp.GetError())
	}
	return resp.File, nil
}
