package flv

import "fmt"

// AMFLimitError is CheckAMF's answer for AMF0 data beyond its bounds.
type AMFLimitError struct {
	// String is set for a string or key too long, clear for values
	// nested too deep.
	String bool
	// Offset is where the offending value starts.
	Offset int
	// Got is its nesting depth or length, Max the bound.
	Got, Max int
}

func (e *AMFLimitError) Error() string {
	if e.String {
		return fmt.Sprintf("AMF0 string of %d bytes at offset %d, longer than %d", e.Got, e.Offset, e.Max)
	}
	return fmt.Sprintf("AMF0 value nested more than %d deep at offset %d", e.Max, e.Offset)
}

// AMF0 markers (AMF0 specification §2.1) that the RTMP library decodes;
// it refuses the others, so CheckAMF stops at them.
const (
	amfNumber      = 0x00
	amfBoolean     = 0x01
	amfString      = 0x02
	amfObject      = 0x03
	amfNull        = 0x05
	amfUndefined   = 0x06
	amfECMAArray   = 0x08
	amfStrictArray = 0x0A
)

// CheckAMF walks the AMF0 values in b (an RTMP command or data message, a
// script tag) without building them, and returns an *AMFLimitError when
// one nests objects and arrays more than maxDepth deep or holds a string
// or key longer than maxString bytes. Decoders of AMF0 (the RTMP
// library's amf0.Unmarshal among them) recurse once per level, so a
// message of a few megabytes nested a million deep would take them
// gigabytes of stack: check first, decode after.
//
// CheckAMF judges only those bounds. Data that is truncated or malformed
// (an unknown marker, an object without its end) passes, and is left to
// the decoder to refuse; CheckAMF's own work and memory are bounded by
// len(b) and maxDepth.
func CheckAMF(b []byte, maxDepth, maxString int) error {
	type level struct {
		object bool   // object or ECMA array: key-value pairs
		left   uint32 // strict array: values still to come
	}
	stack := make([]level, 0, min(maxDepth, 64))
	i := 0
	push := func(l level, at int) error {
		if len(stack) >= maxDepth {
			return &AMFLimitError{Offset: at, Got: len(stack) + 1, Max: maxDepth}
		}
		stack = append(stack, l)
		return nil
	}
	for {
		if n := len(stack); n > 0 {
			top := &stack[n-1]
			if top.object {
				if i+2 > len(b) {
					return nil
				}
				key := int(b[i])<<8 | int(b[i+1])
				if key == 0 {
					// An empty key, then the object-end marker (§2.11).
					i += 3
					stack = stack[:n-1]
					continue
				}
				if key > maxString {
					return &AMFLimitError{String: true, Offset: i, Got: key, Max: maxString}
				}
				i += 2 + key
			} else {
				if top.left == 0 {
					stack = stack[:n-1]
					continue
				}
				top.left--
			}
		}
		if i >= len(b) {
			return nil
		}
		at := i
		marker := b[i]
		i++
		switch marker {
		case amfNumber:
			i += 8
		case amfBoolean:
			i++
		case amfString:
			if i+2 > len(b) {
				return nil
			}
			n := int(b[i])<<8 | int(b[i+1])
			if n > maxString {
				return &AMFLimitError{String: true, Offset: at, Got: n, Max: maxString}
			}
			i += 2 + n
		case amfObject:
			if err := push(level{object: true}, at); err != nil {
				return err
			}
		case amfNull, amfUndefined:
		case amfECMAArray:
			i += 4 // the count, which decoders do not trust either
			if err := push(level{object: true}, at); err != nil {
				return err
			}
		case amfStrictArray:
			if i+4 > len(b) {
				return nil
			}
			n := uint32(b[i])<<24 | uint32(b[i+1])<<16 | uint32(b[i+2])<<8 | uint32(b[i+3])
			i += 4
			if err := push(level{left: n}, at); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}
