"""Reading a compiled XLA program's optimized HLO text: bytes moved, fusions, full-size
float32 arrays, and the longest float32 addition chain its reductions allow.

Standard library only. XLA:GPU compiled without a device gives no ``cost_analysis()``,
so the bytes come from the HLO itself, the same way for every platform:

    bytes = Σ over executed instructions (not inside a fusion) of
            (bytes of its operands + bytes of its outputs)

with an array's bytes its element count times its element size (tile padding is not
counted). Free instructions (parameters, constants, tuples, get-tuple-element,
bitcasts) move nothing; an asynchronous pair (``copy-start``/``copy-done``, a TPU prefetch
into on-chip memory) counts its operand read and written once. A conditional counts its costliest branch, a while loop its body
once (none of the programs measured here has one). On TPU the report gives XLA's own
``bytes accessed`` beside this count.
"""

import re

_ELEMENT_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
                  "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8,
                  "c128": 16}
_FREE = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast", "after-all",
         "partition-id", "replica-id", "iota"}
_ARRAY = re.compile(r"\b(pred|[suf]\d+|bf16|c64|c128)\[([\d,]*)\]")
_COMPUTATION = re.compile(r"^(ENTRY )?%?([\w.\-]+) .*\{\s*$")
_NAME = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = ")


def _balanced(text, start):
    """Index just past the parenthesis group that opens at ``text[start]``."""
    depth = 0
    for index in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[index], 0)
        if depth == 0:
            return index + 1
    return len(text)


def _instruction(line):
    """(name, shape, opcode, operands, attributes) of one HLO instruction line, or None."""
    match = _NAME.match(line)
    if not match:
        return None
    at = match.end()
    end = _balanced(line, at) if line[at] == "(" else line.index(" ", at)
    shape = line[at:end]
    opcode_end = line.find("(", end)
    if opcode_end < 0:
        return None
    opcode = line[end:opcode_end].strip()
    close = _balanced(line, opcode_end)
    return match.group(1), shape, opcode, line[opcode_end + 1:close - 1], line[close:]


def arrays(shape_text):
    """[(element type, dims)] of an HLO shape (an array or a tuple of arrays)."""
    return [(kind, tuple(int(d) for d in dims.split(",") if d))
            for kind, dims in _ARRAY.findall(shape_text)]


def nbytes(shape_text):
    total = 0
    for kind, dims in arrays(shape_text):
        count = 1
        for d in dims:
            count *= d
        total += count * _ELEMENT_BYTES[kind]
    return total


class Instruction:
    def __init__(self, name, shape, opcode, operands, attributes):
        self.name, self.shape, self.opcode = name, shape, opcode
        self.operands = re.findall(r"%([\w.\-]+)", operands)
        self.attributes = attributes
        self.calls = re.findall(
            r"(?:calls|to_apply|body|condition|branch_computations|true_computation|"
            r"false_computation)=\{?([^,}]*(?:, *%[\w.\-]+)*)\}?", attributes)

    def called(self):
        return [name.strip().lstrip("%") for group in self.calls for name in group.split(",")
                if name.strip()]


def parse(text):
    """({computation name: [Instruction]}, entry name) of an HLO module's text."""
    computations, entry, current = {}, None, None
    for line in text.splitlines():
        if current is None:
            match = _COMPUTATION.match(line)
            if match and ("->" in line or match.group(1)):
                current = match.group(2)
                computations[current] = []
                if match.group(1):
                    entry = current
            continue
        if line.startswith("}"):
            current = None
            continue
        parts = _instruction(line)
        if parts:
            computations[current].append(Instruction(*parts))
    return computations, entry


def _computation_bytes(computations, name, each=None):
    body = computations[name]
    shapes = {inst.name: inst.shape for inst in body}
    total = 0
    for inst in body:
        before = total
        if inst.opcode in _FREE:
            continue
        if inst.opcode == "conditional":
            total += max(_computation_bytes(computations, c) for c in inst.called())
            continue
        if inst.opcode == "while":
            total += sum(_computation_bytes(computations, c) for c in inst.called())
            continue
        operands = sum(nbytes(shapes.get(o, "")) for o in inst.operands)
        if inst.opcode.endswith("-done"):
            continue  # counted at its -start
        if inst.opcode.endswith("-start"):  # output: (operands, results, context)
            total += 2 * operands
            continue
        total += nbytes(inst.shape) + operands
        if each is not None:
            each.append((total - before, inst.name, inst.opcode))
    return total


def program_bytes(text):
    """Bytes the program's executed instructions read and write (module docstring)."""
    computations, entry = parse(text)
    return _computation_bytes(computations, entry)


def largest_instructions(text, count=8):
    """[(bytes, name, opcode)] of the entry computation's costliest instructions."""
    computations, entry = parse(text)
    each = []
    _computation_bytes(computations, entry, each)
    return sorted(each, reverse=True)[:count]


def fusion_count(text):
    """Fusions the program launches (counted in the entry computation and its branches)."""
    computations, entry = parse(text)

    def count(name):
        total = 0
        for inst in computations[name]:
            if inst.opcode == "fusion":
                total += 1
            elif inst.opcode in ("conditional", "while"):
                total += max(count(c) for c in inst.called())
        return total
    return count(entry)


def full_size_float32(text, elements):
    """(name, opcode, shape) of each array an executed instruction writes in float32 with
    at least ``elements`` elements, the program's outputs left out: an input widened to
    float32 and written out, or any other full-size float32 temporary."""
    computations, entry = parse(text)
    found = []

    def visit(name, outputs):
        for inst in computations[name]:
            if inst.opcode in _FREE or inst.name in outputs:
                continue
            if inst.opcode in ("conditional", "while"):
                for called in inst.called():
                    visit(called, _outputs(computations[called], computations))
                continue
            for kind, dims in arrays(inst.shape):
                count = 1
                for d in dims:
                    count *= d
                if kind == "f32" and count >= elements:
                    found.append((inst.name, inst.opcode, inst.shape.split("{")[0]))
    visit(entry, _outputs(computations[entry], computations))
    return found


_COPYING = {"parameter", "convert", "copy", "bitcast", "reshape", "transpose", "tuple",
            "get-tuple-element", "broadcast"}


def float32_input_copies(text):
    """Names of the instructions that write an entry parameter out widened to (or kept in)
    float32 and nothing more: a convert or copy of it, or a fusion doing only that."""
    computations, entry = parse(text)
    body = computations[entry]
    parameters = {inst.name: inst.shape for inst in body if inst.opcode == "parameter"}
    found = []
    for inst in body:
        if not any(o in parameters for o in inst.operands):
            continue
        if not any(kind == "f32" for kind, _ in arrays(inst.shape)):
            continue
        if inst.opcode in ("convert", "copy"):
            found.append(inst.name)
        elif inst.opcode == "fusion" and all(
                fused.opcode in _COPYING for called in inst.called()
                for fused in computations.get(called, [])):
            found.append(inst.name)
    return found


def _outputs(body, computations):
    """Names of the instructions whose arrays are the computation's results (its ROOT and
    what a ROOT tuple or get-tuple-element passes on)."""
    by_name = {inst.name: inst for inst in body}
    pending, names = [body[-1].name], set()
    while pending:
        name = pending.pop()
        names.add(name)
        inst = by_name.get(name)
        if inst is not None and inst.opcode in ("tuple", "get-tuple-element", "bitcast",
                                                "conditional"):
            pending.extend(o for o in inst.operands if o not in names)
    return names


def longest_float32_chain(text):
    """The most float32 numbers any reduction in the program adds into one output
    (reductions inside fusions included): an upper bound on the longest chain of
    float32 additions into one accumulator, whatever order the emitter adds in."""
    computations, _ = parse(text)
    longest = 0
    for body in computations.values():
        shapes = {inst.name: inst.shape for inst in body}
        for inst in body:
            if inst.opcode != "reduce":
                continue
            dims = re.search(r"dimensions=\{([\d,]*)\}", inst.attributes)
            operand = arrays(shapes.get(inst.operands[0], ""))
            if not dims or not operand or operand[0][0] != "f32":
                continue
            size = 1
            for d in (int(d) for d in dims.group(1).split(",") if d):
                size *= operand[0][1][d]
            longest = max(longest, size)
    return longest
