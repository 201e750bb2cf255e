package main

import (
	"crypto/rand"
	"encoding/hex"
	"math/big"
	"regexp"
)

// Generated container names are docker-style adjective_surname pairs. The
// lists are berth's own: adjectives, and surnames of people who shaped
// computing and science.
var (
	nameAdjectives = []string{
		"agile", "bold", "brave", "bright", "calm", "clever", "cool", "crisp", "daring", "eager",
		"earnest", "fervent", "fond", "gallant", "gentle", "glad", "happy", "hardy", "honest", "humble",
		"jolly", "keen", "kind", "lively", "loyal", "lucid", "merry", "mellow", "modest", "nimble",
		"patient", "plucky", "proud", "quiet", "quick", "serene", "sharp", "steady", "sunny", "swift",
		"tender", "tidy", "upbeat", "vivid", "warm", "wise", "witty", "zealous",
	}
	nameSurnames = []string{
		"allen", "babbage", "backus", "bardeen", "bell", "boole", "cerf", "church", "codd", "conway",
		"curie", "dijkstra", "einstein", "engelbart", "euler", "faraday", "fermi", "feynman", "gauss", "goldberg",
		"hamilton", "hopper", "huffman", "kahn", "kay", "knuth", "lamport", "liskov", "lovelace", "mccarthy",
		"meitner", "minsky", "noether", "pascal", "perlman", "ritchie", "shannon", "sutherland", "thompson", "torvalds",
		"turing", "vonneumann", "wilkes", "wirth", "wozniak", "yonath",
	}
)

// randomIndex returns a uniform random index below n.
func randomIndex(n int) int {
	v, err := rand.Int(rand.Reader, big.NewInt(int64(n)))
	if err != nil {
		// crypto/rand does not fail on Linux; fall back to the first entry.
		return 0
	}
	return int(v.Int64())
}

// generateName returns a random adjective_surname.
func generateName() string {
	return nameAdjectives[randomIndex(len(nameAdjectives))] + "_" + nameSurnames[randomIndex(len(nameSurnames))]
}

// validName is docker's rule for --name.
var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// randomHex returns n random bytes as hex, for pod UIDs.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
