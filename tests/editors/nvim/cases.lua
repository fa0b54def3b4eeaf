-- The Neovim cases, each run in a fresh child Neovim against the real dg-lsp server (tests/editors/test_nvim.py
-- runs them one by one). The fake backend makes ghost text exact; `engine` runs a tiny random checkpoint.
local C = {}

local SERVER = vim.json.decode((assert(vim.env.DG_SERVER_CMD, 'DG_SERVER_CMD is not set')))
local WORK = assert(vim.env.DG_WORK, 'DG_WORK is not set')
local FUNCTION = { 'def add(a, b):', '    ', '', '', 'print(add(1, 2))' }
local BEFORE = 'def add(a, b):\n    ' -- the fake backend answers by the text before the cursor

--- A child with `lines` in WORK/name.py open and dg set up: `opts.settings` (default: the fake backend),
--- `opts.renderer` ('virt' forces dg's own extmarks instead of vim.lsp.inline_completion), `opts.server`
--- (the command). Waits for the model unless `opts.ready` is false.
local function open(H, name, lines, opts)
  opts = opts or {}
  vim.fn.writefile(lines, WORK .. '/' .. name .. '.py')
  local child = H.spawn(WORK)
  child:lua('require("dg").setup(...)', {
    server = { cmd = opts.server or SERVER, settings = opts.settings or { backend = 'fake' } },
    ghost = { native = opts.renderer ~= 'virt' and 'auto' or false },
  })
  child:cmd('edit ' .. name .. '.py')
  if opts.ready ~= false then
    child:wait('the server to load its model', 'return T.status().state == "ready"', opts.load_seconds or 60)
  end
  return child
end

local function fake(fill)
  return { backend = 'fake', fake = { responses = { [BEFORE] = fill } } }
end

--- Put the cursor at the end of line 2 (inside `add`) in insert mode and wait for `ghost`, drawn by
--- `renderer` ('virt': dg's extmarks; otherwise Neovim's vim.lsp.inline_completion).
local function ghost_at_body(H, child, ghost, renderer)
  child:lua('vim.api.nvim_win_set_cursor(0, {2, 0})')
  child:input('A')
  child:wait('ghost text ' .. vim.inspect(ghost), 'return T.ghost() == ...', 20, ghost)
  H.eq(renderer == 'virt' and 'dg.ghost' or 'nvim.lsp.inline_completion', child:lua('return T.ghost_namespace()'),
    'the namespace of the ghost text')
end

local function line(child, n)
  return child:lua('return vim.api.nvim_buf_get_lines(0, ...)[1]', n - 1, n, true)
end

--- Wait until line `n` (1-based) of the child's buffer reads exactly `text`.
local function wait_line(child, what, n, text)
  child:wait(what, 'local n, text = ...; return vim.api.nvim_buf_get_lines(0, n - 1, n, true)[1] == text', nil, n, text)
end

function C.ghost_accept(H, renderer)
  local child = open(H, 'accept', FUNCTION, { settings = fake('return a + b'), renderer = renderer })
  ghost_at_body(H, child, 'return a + b', renderer)
  child:input('<Tab>')
  wait_line(child, 'accepted text', 2, '    return a + b')
  H.eq('i', child:lua('return T.mode()'), 'mode after accepting')
  H.eq({ 2, 16 }, child:lua('return vim.api.nvim_win_get_cursor(0)'), 'cursor after the accepted text')
  H.eq('def add(a, b):', line(child, 1), 'line 1')
  H.no_errors(child)
end

function C.ghost_accept_word(H, renderer)
  local child = open(H, 'word', FUNCTION, { settings = fake('return a + b'), renderer = renderer })
  ghost_at_body(H, child, 'return a + b', renderer)
  child:input('<M-Right>')
  wait_line(child, 'one word accepted', 2, '    return')
  child:wait('the rest as ghost text', 'return T.ghost() == " a + b"')
  child:input('<M-Right>')
  wait_line(child, 'the next word accepted', 2, '    return a')
  child:wait('the rest as ghost text', 'return T.ghost() == " + b"')
  child:input('<Tab>')
  wait_line(child, 'the rest accepted', 2, '    return a + b')
  H.no_errors(child)
end

function C.ghost_accept_line(H, renderer)
  local fill = 'total = a + b\n    return total'
  local child = open(H, 'line', FUNCTION, { settings = fake(fill), renderer = renderer })
  ghost_at_body(H, child, fill, renderer)
  child:input('<M-C-Right>')
  wait_line(child, 'one line accepted', 2, '    total = a + b')
  child:wait('the next line as ghost text', 'return T.ghost() == "\\n    return total"')
  child:input('<M-C-Right>')
  wait_line(child, 'the second line accepted', 3, '    return total')
  H.eq('    total = a + b', line(child, 2), 'line 2')
  H.no_errors(child)
end

function C.ghost_dismiss(H, renderer)
  local child = open(H, 'dismiss', FUNCTION, { settings = fake('return a + b'), renderer = renderer })
  ghost_at_body(H, child, 'return a + b', renderer)
  child:input('<C-]>')
  child:wait('the ghost text to go', 'return T.ghost() == nil')
  child:input('<Esc>')
  child:wait('normal mode', 'return T.mode() == "n"')
  ghost_at_body(H, child, 'return a + b', renderer)
  child:input('<Esc>')
  child:wait('leaving insert mode to hide the ghost text', 'return T.ghost() == nil')
  H.eq(FUNCTION, child:lua('return T.lines()'), 'the buffer')
  H.no_errors(child)
end

--- Accepting all of the ghost text runs the item's command: the server computes the completion at the new
--- cursor while idle, so the request Neovim sends there is answered from the cache (no second model run).
function C.speculate_after_accept(H, renderer)
  local settings = { backend = 'fake', fake = { responses = { [BEFORE] = 'return a + b', ['return a + b'] = '  # the sum' } } }
  local child = open(H, 'speculate', FUNCTION, { settings = settings, renderer = renderer })
  ghost_at_body(H, child, 'return a + b', renderer)
  child:input('<Tab>')
  wait_line(child, 'accepted text', 2, '    return a + b')
  child:wait('the next completion as ghost text', 'return T.ghost() == "  # the sum"')
  local stats = child:wait('the worker idle', 'local s = T.stats() return s and s.pending == 0 and s')
  H.eq({ 1, 2 }, { stats.speculated, stats.started }, 'speculations and model runs')
  assert(stats.cacheHits >= 1, 'the request at the new cursor was no cache hit: ' .. vim.inspect(stats))
  H.no_errors(child)
end

--- A block completion over three canvases shows how many lines it has so far in the status while it runs;
--- at its end the status is the model's again.
function C.completion_progress(H)
  local fill = 'total = a\n\f    total += b\n\f    return total\nprint(1)\n\fnever'
  local child = open(H, 'progress', FUNCTION, { settings = fake(fill) })
  child:lua([[T.seen = {}
    vim.api.nvim_create_autocmd('LspProgress', { callback = function() table.insert(T.seen, require('dg').statusline()) end })]])
  ghost_at_body(H, child, 'total = a\n    total += b\n    return total')
  child:wait('the end of the progress', 'return #T.seen > 0 and not T.seen[#T.seen]:find("completing")')
  local seen = child:lua('return T.seen')
  -- the raw text so far: the last canvas's `print(1)` line is there until the stop rule cuts the block at it
  assert(vim.tbl_contains(seen, 'dg-lsp: completing… 4 lines'), 'the status never showed 4 lines: ' .. vim.inspect(seen))
  H.eq({}, vim.tbl_filter(function(line) return line:find('0 lines') end, seen), 'statuses with no lines yet')
  H.eq('dg-lsp ready · model fake · device cpu · kernels none', seen[#seen]:gsub(' · last %d+ ms$', ''), 'the status at the end')
  H.no_errors(child)
end

function C.rewrite(H)
  local child = open(H, 'rewrite', { 'def add(a, b):', '    return a + b', '' })
  child:input('gg0wvf):Dg rewrite<CR>') -- charwise: "add(a, b)"
  wait_line(child, 'the selection rewritten', 1, 'def ADD(A, B):')
  child:input('2GV:Dg rewrite<CR>') -- linewise: line 2
  wait_line(child, 'the line rewritten', 2, '    RETURN A + B')
  H.eq({ 'def ADD(A, B):', '    RETURN A + B', '' }, child:lua('return T.lines()'), 'the buffer')
  H.no_errors(child)
end

function C.hints(H)
  local child = open(H, 'hints', { 'def add(a, b):', '    return a + b', '' }, { settings = {
    backend = 'fake', fake = { unlikely = { 'qqq' } }, hints = { enable = true, debounceMs = 0 } } })
  child:lua('vim.api.nvim_buf_set_lines(0, 1, 2, false, { "    return a + b qqq" })')
  child:wait('a hint on "qqq"', [[local d = vim.diagnostic.get(0)
    return #d == 1 and d[1].severity == vim.diagnostic.severity.HINT and d[1].source == "dg-lsp"
      and d[1].lnum == 1 and d[1].col == 17 and d[1].end_col == 20]])
  child:lua([[vim.api.nvim_win_set_cursor(0, { 2, 17 })
    vim.lsp.buf.code_action({ apply = true, filter = function(a) return a.kind == "quickfix" end })]])
  wait_line(child, 'the quick fix applied', 2, '    return a + b QQQ')
  child:wait('the hint gone', 'return #vim.diagnostic.get(0) == 0')
  H.no_errors(child)
end

function C.fill(H)
  local child = open(H, 'fill', { 'x = <FILL>', 'y = <FILL>' },
    { settings = { backend = 'fake', fake = { responses = { ['y = '] = '2' } } } })
  child:cmd('Dg fill')
  child:wait('holes filled', 'return vim.deep_equal(T.lines(), { "x = fill_0", "y = 2" })')
  H.no_errors(child)
end

function C.status_and_health(H)
  local child = open(H, 'status', FUNCTION)
  child:cmd('Dg status')
  local note = child:wait(':Dg status', 'return T.noted("dg%-lsp ready")[1]')
  H.eq('dg: dg-lsp ready · model fake · device cpu · kernels none', note.msg, ':Dg status')
  child:cmd('checkhealth dg')
  local report = table.concat(child:lua('return T.lines()'), '\n')
  for _, expected in ipairs({ 'vim.lsp.inline_completion', 'server command: ' .. table.concat(SERVER, ' '),
    'backend: fake; model: the embedded model', 'device: auto', 'dg-lsp ready · model fake · device cpu' }) do
    assert(report:find(expected, 1, true), ('checkhealth report lacks %q:\n%s'):format(expected, report))
  end
  assert(not report:find('ERROR'), 'checkhealth reported an error:\n' .. report)
end

--- The server process dies mid-session: a message, no error trace, typing still works, :Dg restart revives it.
function C.server_exits(H)
  local pidfile = WORK .. '/server.pid'
  local server = vim.list_extend({ 'sh', '-c', 'echo $$ > "$0"; exec "$@"', pidfile }, vim.deepcopy(SERVER))
  local child = open(H, 'exits', FUNCTION, { settings = fake('return a + b'), server = server })
  vim.uv.kill(tonumber(vim.fn.readfile(pidfile)[1]), 'sigkill')
  child:wait('a message that the server exited', 'return #T.noted("the dg%-lsp server exited") > 0')
  child:lua('vim.api.nvim_win_set_cursor(0, {2, 0})')
  child:input('Areturn 1<Esc>')
  child:wait('typing to go on', 'return vim.api.nvim_buf_get_lines(0, 1, 2, true)[1] == "    return 1" and T.mode() == "n"')
  child:cmd('Dg status')
  child:wait(':Dg status to say so', 'return T.noted("dg%-lsp is not running")[1]')
  H.no_errors(child)
  child:cmd('Dg restart')
  child:wait('the restarted server', 'return T.status().state == "ready"', 60)
  child:cmd('undo')
  ghost_at_body(H, child, 'return a + b')
  H.no_errors(child)
end

--- A server command that is missing, or that exits at once: a message each, no error trace.
function C.server_fails(H)
  local missing = open(H, 'missing', FUNCTION, { server = { WORK .. '/no-such-dg-lsp' }, ready = false })
  missing:wait('a message naming the command', 'return #T.noted("no%-such%-dg%-lsp. is not executable") > 0')
  H.no_errors(missing)
  local failing = open(H, 'failing', FUNCTION, { server = { 'sh', '-c', 'exit 3' }, ready = false })
  failing:wait('a message that the server exited', 'return #T.noted("server exited %(code 3") > 0')
  H.no_errors(failing)
end

--- The real engine on a tiny random-weight checkpoint (DG_CKPT): its text is garbage, so only the protocol
--- is checked: the model loads on the CPU, completions and a rewrite are answered, nothing errors.
function C.engine(H)
  local settings = { backend = 'engine', model = { path = assert(vim.env.DG_CKPT), device = 'cpu' },
    context = { budget = 200 }, inline = { lineCanvas = 8, blockCanvas = 16 }, sampler = { steps = 4 }, cache = { size = 0 } }
  local child = open(H, 'tiny_model', FUNCTION, { settings = settings, load_seconds = 180 })
  local status = child:lua('return T.status()')
  H.eq({ 'ready', 'cpu', 'torch' }, { status.state, status.device, status.kernels }, 'state, device, kernels')
  assert(type(status.model) == 'string' and status.model ~= '', 'status names the model: ' .. vim.inspect(status))
  local answered = 'local s = T.stats() return s and s.computed >= ... and s.pending == 0 and s.replied == s.received - 1'
  child:lua('vim.api.nvim_win_set_cursor(0, {2, 0})')
  child:input('A')
  child:wait('an inline completion computed and answered', answered, 60, 1)
  local ghost = child:wait('ghost text of some kind', 'return T.ghost()')
  child:input('<Tab>')
  child:wait('the ghost text accepted', 'return vim.api.nvim_buf_get_lines(0, 1, 2, true)[1] ~= "    "')
  local body = child:lua('return vim.api.nvim_buf_get_lines(0, 1, -1, true)')
  H.eq('    ' .. ghost, table.concat(body, '\n'):sub(1, #ghost + 4), 'the accepted ghost text')
  child:input('<Esc>')
  child:input('1GV:Dg rewrite<CR>')
  child:wait('the rewrite computed and answered', answered, 60, 2)
  H.eq(FUNCTION[5], child:lua('return vim.api.nvim_buf_get_lines(0, -2, -1, true)[1]'), 'the line after the selection')
  H.eq({}, child:lua('return T.noted("failed")'), 'failure messages')
  H.no_errors(child)
end

--- Options: bad keys are named and fall back to their defaults; setup() merges once; the accept pieces;
--- with no ghost text shown a key keeps its own meaning; a command the server refuses shows its message.
function C.options_and_keys(H)
  local child = open(H, 'options', FUNCTION,
    { settings = { backend = 'fake', inline = { enable = false }, rewrite = { enable = false } } })
  local merged = child:lua([[local options, problems = require('dg.config').merge(...) return { options, problems }]], {
    server = { cmd = 'dg-lsp', bogus = 1 }, keys = { accept = 3 }, ghost = { native = 'x' }, extra = {} })
  local problems = table.concat(merged[2], '\n')
  for _, expected in ipairs({ 'unknown option extra: expected one of server, ghost, keys',
    'option server.cmd = "dg-lsp" is invalid: expected a list of strings (command and arguments); using the default { "dg-lsp" }',
    'unknown option server.bogus', 'option keys.accept = 3 is invalid: expected a key (string) or false',
    "option ghost.native = \"x\" is invalid: expected 'auto', true or false" }) do
    assert(problems:find(expected, 1, true), ('no problem %q in:\n%s'):format(expected, problems))
  end
  H.eq({ { 'dg-lsp' }, '<Tab>', 'auto' }, { merged[1].server.cmd, merged[1].keys.accept, merged[1].ghost.native }, 'defaults kept')
  child:lua('require("dg").setup({ keys = { accept = "<C-y>" } })')
  child:wait('a warning that setup already ran', 'return T.noted("setup%(%) already ran")[1]')
  H.eq('<Tab>', child:lua('return require("dg.config").options.keys.accept'), 'options after a second setup()')

  local pieces = child:lua([[local piece = require('dg.ghost').piece return {
    piece('return a + b', 'word'), piece(' a + b', 'word'), piece('(x, y)', 'word'), piece('  \n  x', 'word'),
    piece('abc\ndef', 'line'), piece('\n    return x\n    y', 'line'), piece('abc\ndef', 'all') }]])
  H.eq({ 'return', ' a', '(', '  \n  x', 'abc', '\n    return x', 'abc\ndef' }, pieces, 'accept pieces')

  H.eq(true, child:lua('return vim.fn.maparg("<M-Right>", "i") ~= ""'), 'accept_word is mapped')
  child:lua('vim.api.nvim_win_set_cursor(0, {2, 0})')
  child:input('A<Tab>x<Esc>')
  child:wait('<Tab> to insert whitespace', 'return vim.api.nvim_buf_get_lines(0, 1, 2, true)[1]:match("^    %s+x$")')
  child:input('ggV:Dg rewrite<CR>') -- the server refuses: its message is shown, nothing raised
  local refused = child:wait('the refusal', 'return T.noted("rewrite failed")[1]')
  H.eq('dg: rewrite failed: rewrite is disabled: set option rewrite.enable to true', refused.msg, 'the refusal')
  H.no_errors(child)
end

return C
