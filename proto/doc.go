// Package proto holds kds-engine's protobuf definitions and the Go code
// generated from them: kds/v1 (the zone<->global stream). The engine<->plugin
// protocol, plugin/v1, lives in the sdk module (sdk/proto). `make proto`
// regenerates the code of both with the pinned generators listed as tools in
// go.mod; `make check-proto` fails when the committed code is stale.
package proto
