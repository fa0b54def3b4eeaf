--- `:Dg rewrite` (visual selection), `:Dg fill`, `:Dg status`, `:Dg restart`. The server computes the
--- edits and applies them with workspace/applyEdit; this module only sends the command.
local server = require('dg.server')
local M = {}

local say = require('dg.config').notify

local function client_for(bufnr)
  local client = server.clients(bufnr)[1]
  if not client then
    say('no dg-lsp server is attached to this buffer (see :checkhealth dg)', vim.log.levels.WARN)
  end
  return client
end

local function execute(bufnr, command, argument, what)
  local client = client_for(bufnr)
  if not client then
    return
  end
  argument.uri = vim.uri_from_bufnr(bufnr)
  server.call(client, 'request', 'workspace/executeCommand', { command = command, arguments = { argument } },
    function(err)
      if err then
        say(('%s failed: %s'):format(what, err.message), vim.log.levels.ERROR)
      end
    end, bufnr)
end

--- The LSP range of the selection `opts` (a :command's range) points at: the last visual selection
--- when the range is its lines ('<,'>), whole lines otherwise.
local function selection_range(bufnr, opts, encoding)
  local first, last = vim.api.nvim_buf_get_mark(bufnr, '<'), vim.api.nvim_buf_get_mark(bufnr, '>')
  local srow, scol, erow, ecol = opts.line1 - 1, 0, opts.line2, 0 -- whole lines, end exclusive
  if first[1] == opts.line1 and last[1] == opts.line2 and vim.fn.visualmode() ~= 'V' then
    local line = vim.api.nvim_buf_get_lines(bufnr, last[1] - 1, last[1], true)[1]
    local stop = math.min(last[2], math.max(#line - 1, 0))
    local width = vim.o.selection == 'exclusive' and 0 or #vim.fn.strcharpart(line:sub(stop + 1), 0, 1)
    srow, scol, erow, ecol = first[1] - 1, first[2], last[1] - 1, math.min(stop + width, #line)
  elseif erow >= vim.api.nvim_buf_line_count(bufnr) then -- the last line: end at its end, not past it
    erow = erow - 1
    ecol = #vim.api.nvim_buf_get_lines(bufnr, erow, erow + 1, true)[1]
  end
  local function pos(row, col)
    return { line = row, character = vim.lsp.util.character_offset(bufnr, row, col, encoding) }
  end
  return { start = pos(srow, scol), ['end'] = pos(erow, ecol) }
end

local sub = {}

function sub.rewrite(bufnr, opts)
  local client = client_for(bufnr)
  if client and opts.range == 0 then
    say('select the code to rewrite (visual mode), then :Dg rewrite', vim.log.levels.WARN)
  elseif client then
    local range = selection_range(bufnr, opts, client.offset_encoding)
    execute(bufnr, 'dg-lsp.rewriteSelection', { range = range }, 'rewrite')
  end
end

function sub.fill(bufnr)
  execute(bufnr, 'dg-lsp.fillHoles', {}, 'fill holes')
end

function sub.status(bufnr)
  say(require('dg.status').summary(bufnr))
end

function sub.restart()
  server.restart()
  say('restarted the dg-lsp server')
end

M.names = vim.tbl_keys(sub)
table.sort(M.names)

--- The `:Dg` command (plugin/dg.lua).
function M.run(opts)
  if not require('dg.config').options then
    return say("call require('dg').setup() first", vim.log.levels.ERROR)
  end
  local run = sub[opts.fargs[1] or '']
  if not run then
    return say(('unknown subcommand %q: expected one of %s'):format(opts.fargs[1] or '', table.concat(M.names, ', ')),
      vim.log.levels.ERROR)
  end
  run(vim.api.nvim_get_current_buf(), opts)
end

return M
