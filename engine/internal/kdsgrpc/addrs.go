package kdsgrpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
)

// ErrInvalidAddress: a list of global addresses has an entry that is not
// HOST:PORT, or an entry twice.
var ErrInvalidAddress = errors.New("invalid global address")

// addressError is a bad entry of an address list; it wraps
// ErrInvalidAddress without repeating its text.
type addressError struct{ msg string }

func (e *addressError) Error() string { return e.msg }
func (e *addressError) Unwrap() error { return ErrInvalidAddress }

func badAddress(format string, args ...any) error {
	return &addressError{msg: fmt.Sprintf(format, args...)}
}

// ParseAddresses splits a comma-separated list of global replicas
// ("g1:5685,g2:5685,[::1]:5685") into its entries, in order, spaces around
// entries trimmed. Every entry must be HOST:PORT with a non-empty host
// (IPv6 in brackets) and a port from 1 to 65535, and appear once (hosts
// compare case-insensitively). The error wraps ErrInvalidAddress and names
// the bad entry and its position.
func ParseAddresses(list string) ([]string, error) {
	parts := strings.Split(list, ",")
	out := make([]string, 0, len(parts))
	seen := map[string]int{}
	for i, p := range parts {
		p = strings.TrimSpace(p)
		where := fmt.Sprintf("entry %d of %q", i+1, list)
		if len(parts) == 1 {
			where = fmt.Sprintf("%q", list)
		}
		if p == "" {
			if len(parts) == 1 {
				return nil, badAddress("empty: want HOST:PORT, or several separated by commas")
			}
			return nil, badAddress("%s is empty (want HOST:PORT entries separated by single commas)", where)
		}
		if len(parts) > 1 {
			where = fmt.Sprintf("entry %d (%q)", i+1, p)
		}
		host, port, err := net.SplitHostPort(p)
		if err != nil {
			var ae *net.AddrError
			hint := "want HOST:PORT, IPv6 in brackets as in [::1]:5685"
			if errors.As(err, &ae) && ae.Err == "missing port in address" {
				hint = "missing port: want HOST:PORT such as " + p + ":5685"
			}
			return nil, badAddress("%s: %s", where, hint)
		}
		if host == "" {
			return nil, badAddress("%s: no host (want HOST:PORT)", where)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, badAddress("%s: port %q is not a number from 1 to 65535", where, port)
		}
		key := net.JoinHostPort(strings.ToLower(host), port)
		if j, dup := seen[key]; dup {
			return nil, badAddress("%s repeats entry %d", where, j+1)
		}
		seen[key] = i
		out = append(out, p)
	}
	return out, nil
}

// Resolver looks up the IP addresses of a host name
// (net.Resolver.LookupHost).
type Resolver func(ctx context.Context, host string) ([]string, error)

// candidate is one address the Dialer may dial: an IP address (or a host
// name it could not resolve on its own, dialed as is) and port, with the
// configured entry it came from and the name to verify global's certificate
// against.
type candidate struct {
	addr       string // dialed: HOST:PORT
	entry      string // configured entry; differs from addr for a resolved name
	serverName string
}

// label names the candidate in errors and logs: the dialed address, and
// the configured name it was resolved from.
func (c candidate) label() string {
	if c.entry == c.addr {
		return c.addr
	}
	return c.entry + " (" + c.addr + ")"
}

// candidates expands entries (validated HOST:PORT) into the addresses to
// try, in order: an IP literal is itself; a host name is every address it
// resolves to, in the resolver's order. The same address twice is kept
// once. serverName, if set, is the name to verify for every candidate;
// otherwise it is the entry's host. Entries whose lookup fails add nothing;
// the returned error joins their failures (nil if every lookup succeeded).
func candidates(ctx context.Context, entries []string, resolve Resolver, serverName string) ([]candidate, error) {
	var out []candidate
	var errs []error
	add := func(c candidate) {
		if !slices.ContainsFunc(out, func(o candidate) bool { return o.addr == c.addr }) {
			out = append(out, c)
		}
	}
	for _, e := range entries {
		host, port, err := net.SplitHostPort(e)
		if err != nil {
			errs = append(errs, badAddress("%q", e))
			continue
		}
		name := serverName
		if name == "" {
			name = host
		}
		if net.ParseIP(host) != nil {
			add(candidate{addr: e, entry: e, serverName: name})
			continue
		}
		ips, err := resolve(ctx, host)
		if err != nil || len(ips) == 0 {
			if err == nil {
				err = errors.New("no addresses")
			}
			errs = append(errs, fmt.Errorf("global at %s: cannot resolve %s: %w; check the host name in --global", e, host, err))
			continue
		}
		for _, ip := range ips {
			add(candidate{addr: net.JoinHostPort(ip, port), entry: e, serverName: name})
		}
	}
	return out, errors.Join(errs...)
}

// rotateAfter returns cs starting with the candidate after the one dialed
// at last, so that last (if still present) comes at the end; cs as is when
// last is not among them.
func rotateAfter(cs []candidate, last string) []candidate {
	i := slices.IndexFunc(cs, func(c candidate) bool { return c.addr == last })
	if i < 0 {
		return cs
	}
	return append(slices.Clone(cs[i+1:]), cs[:i+1]...)
}
