// Package proto holds kds-engine's protobuf definitions and the Go code
// generated from them: kds/v1 (the zone<->global stream) and plugin/v1 (the
// engine<->plugin protocol). `make proto` regenerates the code with the pinned
// generators listed as tools in go.mod; `make check-proto` fails when the
// committed code is stale.
package proto
